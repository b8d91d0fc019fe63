"""Limits on what one rule may cost: a static estimate at load, a clock at decide time.

A rule with nested comprehensions (``[1..30].all(a, [1..30].all(b, ...)))``) used to make
one ``decide()`` run until killed, stalling every run of its contract; a syntax error past
column 65535 raised ``pyo3_runtime.PanicException`` (a ``BaseException``) out of
``compile_expression``, and a chain of 20,000 ``.a`` selections killed the process. See
"Limits" in docs/policy.md.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import ContractError, InMemoryHistory
from charter.errors import CelCompileError, CelEvalError
from charter.policy.cel import (
    ASSUMED_SIZE,
    GUARD_COST,
    TICK,
    Environment,
    compile_expression,
    estimate_cost,
    worst_size,
)
from tests.helpers import NOW, ROOT, contract_with, pack, refund, rule

THIRTY = "[" + ", ".join(str(i) for i in range(1, 31)) + "]"


def nested(levels: int, over: str = THIRTY) -> str:
    """``levels`` comprehensions over ``over``, nested, summing their variables."""
    names = [f"v{i}" for i in range(levels)]
    body = " + ".join(names) + " >= 0"
    for name in reversed(names):
        body = f"{over}.all({name}, {body})"
    return body


#: 30**6 iterations: hours of evaluation without a limit
DEEP = nested(6)


@pytest.fixture
def fast_budget(monkeypatch: pytest.MonkeyPatch) -> int:
    """A 100 ms decision budget, so that running out of it is quick to test."""
    monkeypatch.setenv("CHARTER_CAP_DECISION_MS", "100")
    return 100


@pytest.fixture
def any_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """No static limit: what is left to stop an expensive rule is the clock."""
    monkeypatch.setenv("CHARTER_CAP_EXPRESSION_COST", str(10**18))


# -- the estimate ----------------------------------------------------------------------


def test_nesting_multiplies_the_cost_by_the_length_of_each_literal_range() -> None:
    one, two, three = (estimate_cost(nested(n)) for n in (1, 2, 3))
    assert 30 < one < 30 * 20
    assert two > 30 * one > 0
    assert three > 30 * two
    assert estimate_cost(nested(2, "[1, 2]")) < estimate_cost(nested(2, "[1, 2, 3, 4]"))


def test_ranges_built_by_concatenation_count_every_element() -> None:
    joined = " + ".join([THIRTY] * 20)  # 600 elements
    alone = estimate_cost(f"{THIRTY}.map(x, x * 2).size() > 0")
    concatenated = estimate_cost(f"({joined}).map(x, x * 2).size() > 0")
    assert concatenated > 15 * alone
    nested_maps = f"({joined}).map(x, ({joined}).map(y, x + y)).size() > 0"
    assert estimate_cost(nested_maps) > 600 * 600


def test_values_built_by_helpers_have_the_length_they_can_reach() -> None:
    flat = estimate_cost(f"{THIRTY}.map(x, {THIRTY}).flatten().exists(y, y == 0)")
    assert flat > 30 * 30
    doubled = '"aaaaaaaaaa"' + '.replace("a", "aaaaaaaaaa")' * 6
    assert estimate_cost(f"size({doubled}) > 0") > 10**6


def test_request_data_is_assumed_to_hold_the_assumed_number_of_elements() -> None:
    loop = "context.items.exists(o, o.id == action.args.order_id)"
    assert ASSUMED_SIZE <= estimate_cost(loop) < 10 * ASSUMED_SIZE
    assert estimate_cost(loop, size=1000) > estimate_cost(loop)
    two = "context.items.exists(o, context.items.exists(p, p.a == o.a + 2))"
    assert ASSUMED_SIZE**2 < estimate_cost(two) < 20 * ASSUMED_SIZE**2
    # comparing or reading request fields is one step each, however large they may be
    assert estimate_cost('action.name == "refund" && action.args.amount > 100') < 20


def test_the_three_argument_map_and_calls_are_followed() -> None:
    assert estimate_cost("[1, 2, 3].map(x, x > 1, x * 2).size() == 2") < 100
    assert estimate_cost('count("refund", {"to": action.args.to}, duration("1h")) > 2') > 100


def test_sources_the_estimator_cannot_follow_get_a_coarse_bound() -> None:
    # a comprehension in a form CEL does not expand: the coarse bound counts it anyway
    cost = estimate_cost("[1, 2].all(i, v, v > 0)")
    assert cost >= ASSUMED_SIZE * 10


def test_every_shipped_expression_is_within_the_default_cost_cap() -> None:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    sources: list[str] = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        data = yaml.load(path.read_text("utf-8"))
        if not isinstance(data, dict):
            continue
        rules = (data.get("policy") or {}).get("rules") or data.get("rules") or []
        sources += [r["when"] for r in rules if isinstance(r, dict) and "when" in r]
        sources += list(data.get("success") or [])
        if isinstance(data.get("value"), dict):
            sources.append(data["value"]["expr"])
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import policy as bench_policy  # bench/policy.py
    finally:
        sys.path.remove(str(ROOT / "bench"))
    sources += [r["when"] for r in bench_policy.generated_rules(100)]
    assert len(sources) > 100
    for source in sources:
        assert compile_expression(source).cost <= 1_000_000, source


# -- what is refused at load ------------------------------------------------------------


def test_a_nested_comprehension_rule_is_refused_at_load() -> None:
    with pytest.raises(ContractError) as info:
        contract_with([rule("deep", DEEP, "allow")])
    (issue,) = info.value.issues
    assert issue.path == "policy.rules[0].when"
    assert "(expression_cost)" in issue.message
    assert "CHARTER_CAP_EXPRESSION_COST=N" in issue.message
    assert "comprehension" in issue.hint


def test_a_raised_cost_cap_loads_it(any_cost: None) -> None:
    assert contract_with([rule("deep", DEEP, "allow")]).engine.rules[0].id == "deep"


# -- the clock at decide time -------------------------------------------------------------


def _decide(contract: Any, **request: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    decision = contract.decide(action=refund(), now=NOW, **request)
    return decision, (time.perf_counter() - started) * 1000


@pytest.mark.timeout(30)
def test_a_nested_comprehension_rule_fails_closed_at_the_decision_budget(
    any_cost: None, fast_budget: int
) -> None:
    contract = contract_with(
        [rule("deep", DEEP, "allow"), rule("routine", "true", "allow")], on_error="review"
    )
    decision, ms = _decide(contract)
    assert fast_budget <= ms < fast_budget + 400
    assert decision.effect == "review"  # on_error
    assert decision.errors[0].rule == "deep"
    message = decision.errors[0].message
    assert "(decision_ms)" in message
    assert "CHARTER_CAP_DECISION_MS=N" in message
    assert f"over the limit of {fast_budget}" in message
    assert "rule deep failed closed: " in " ".join(decision.reasons)


@pytest.mark.timeout(30)
def test_rules_after_the_one_that_ran_out_fail_closed_unevaluated(
    any_cost: None, fast_budget: int
) -> None:
    contract = contract_with(
        [rule("deep", DEEP, "review"), rule("after", "false", "deny")], on_error="escalate"
    )
    decision, _ = _decide(contract)
    assert decision.effect == "escalate"
    errors = {e.rule: e.message for e in decision.errors}
    assert errors["after"].startswith("not evaluated: the decision ran out of time in rule deep")
    assert set(decision.matched) == {"deep", "after"}


@pytest.mark.timeout(30)
def test_a_rule_whose_cost_depends_on_the_data_fails_closed_too(fast_budget: int) -> None:
    # cheap to the estimate (two levels over request data), 25 million steps on this request
    when = "context.items.exists(x, context.items.exists(y, x + y < 0))"
    assert compile_expression(when).guarded is not None
    contract = contract_with([rule("ok", "true", "allow"), rule("pairs", when, "deny")])
    small, _ = _decide(contract, context={"items": list(range(10))})
    assert small.effect == "allow"
    assert not small.errors
    decision, ms = _decide(contract, context={"items": list(range(5000))})
    assert ms < fast_budget + 400
    assert decision.effect == "deny"
    assert [e.rule for e in decision.errors] == ["pairs"]


@pytest.mark.timeout(30)
def test_running_out_fails_closed_even_where_cel_would_absorb_the_error(
    any_cost: None, fast_budget: int
) -> None:
    # `error || true` is true in CEL: the abort must not turn into a match
    contract = contract_with([rule("absorbing", f"({DEEP}) || true", "allow")])
    decision, ms = _decide(contract)
    assert ms < fast_budget + 400
    assert decision.effect == "deny"
    assert [e.rule for e in decision.errors] == ["absorbing"]


class SlowHistory(InMemoryHistory):
    def count(self, action: str, match: Any, since: datetime, until: datetime) -> int:
        time.sleep(0.01)
        return super().count(action, match, since, until)


@pytest.mark.timeout(30)
def test_history_queries_stop_at_the_deadline(fast_budget: int) -> None:
    counted = (
        "[" + ", ".join(str(i) for i in range(200)) + "]"
        '.exists(i, count("refund", {"order_id": string(i)}, duration("1h")) > 0)'
    )
    contract = contract_with([rule("ok", "true", "allow"), rule("counting", counted, "deny")])
    decision, ms = _decide(contract, history=SlowHistory())
    assert ms < fast_budget + 200  # 200 queries would take 2 s
    assert [e.rule for e in decision.errors] == ["counting"]


def test_cheap_rules_take_the_fast_path() -> None:
    assert compile_expression('action.name == "refund" && action.args.amount > 1').guarded is None
    assert compile_expression("[1, 2, 3].exists(x, x == 2)").guarded is None
    assert estimate_cost(nested(2)) < GUARD_COST
    assert compile_expression(nested(2)).guarded is None
    assert estimate_cost(nested(3), size=worst_size()) >= GUARD_COST
    assert compile_expression(nested(3)).guarded is not None
    # any comprehension over request data: its length is only known when deciding
    assert compile_expression("context.items.exists(x, x == 1)").guarded is not None


@pytest.mark.timeout(30)
def test_success_criteria_are_evaluated_within_the_budget(any_cost: None, fast_budget: int) -> None:
    expr = compile_expression(DEEP)
    started = time.perf_counter()
    with pytest.raises(CelEvalError, match=r"\(decision_ms\)"):
        expr.evaluate(Environment({}, {}))
    assert (time.perf_counter() - started) * 1000 < fast_budget + 400
    assert compile_expression(nested(1)).evaluate(Environment({}, {})) is True


def _wrapped(source: str) -> Any:
    expr = compile_expression(source)
    assert expr.guarded is not None
    return expr


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "a", "b,c"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=12,
)
GUARDED = [
    "context.items.exists(x, x == 1)",
    "context.items.all(x, x != null)",
    "context.items.exists_one(x, x == 1)",
    "context.items.filter(x, x == 1).size()",
    "context.items.map(x, [x, x])",
    "context.items.map(x, x != 1, x)",
    "context.items.exists(x, context.items.exists(y, x == y && x != null))",
    "context.items.exists(x, x.a == 1 || x.b)",
    "context.items.all(x, context.items.map(y, y).size() > 0 ? x == x : false)",
    "[context.items].exists(q, q.exists(r, r == 2))",
    "context.items.exists(x, /* no comments in CEL */ x == 1)".replace(
        "/* no comments in CEL */ ", ""
    ),
    "context.items.exists(x, x == 1 // a comment\n)",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(VALUES, max_size=5), source=st.sampled_from(GUARDED))
def test_deadline_checks_do_not_change_what_an_expression_gives(items: Any, source: str) -> None:
    expr = _wrapped(source)
    env = Environment({"context": {"items": items}}, {TICK: lambda: True})
    outcomes = []
    for program in (expr.program, expr.guarded):
        try:
            outcomes.append(("value", program.execute(env.context)))
        except Exception as exc:
            outcomes.append(("error", type(exc).__name__))
    assert outcomes[0] == outcomes[1]


# -- what compile_expression refuses ----------------------------------------------------


def test_compile_refuses_expressions_over_the_length_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CelCompileError, match=r"is 10,001, over the limit of 10,000"):
        compile_expression("1" * 10_001)
    monkeypatch.setenv("CHARTER_CAP_EXPRESSION_CHARS", "20")
    with pytest.raises(CelCompileError, match=r"CHARTER_CAP_EXPRESSION_CHARS=N"):
        compile_expression("action.args.amount > 100")
    assert compile_expression("true").source == "true"


def test_a_parser_panic_is_a_compile_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # before: pyo3_runtime.PanicException, which `except Exception` does not catch
    monkeypatch.setenv("CHARTER_CAP_EXPRESSION_CHARS", "100000")
    with pytest.raises(CelCompileError, match="CEL parser failed"):
        compile_expression("1" + " " * 70_000 + "+")


CHAINS = ['"action" + ".a" * 20_000', '"1" + " + 1" * 50_000', '"a" + "[0]" * 20_000']


@pytest.mark.timeout(60)
def test_chains_that_overflow_the_parser_stack_are_refused() -> None:
    # before (with the length cap raised): SIGSEGV; run in a subprocess, so that a crash
    # fails this test rather than ending the test run
    script = textwrap.dedent(
        f"""
        from charter.errors import CelCompileError
        from charter.policy.cel import compile_expression
        for source in [{", ".join(CHAINS)}]:
            try:
                compile_expression(source)
            except CelCompileError as exc:
                print("refused:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=50,
        env={"CHARTER_CAP_EXPRESSION_CHARS": "1000000", "PATH": ""},
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    refusals = done.stdout.splitlines()
    assert len(refusals) == len(CHAINS), done.stdout
    assert all("operators, more than the 5,000" in line for line in refusals)


def test_a_raw_string_with_a_backslash_keeps_the_field_analysis() -> None:
    expr = compile_expression(r'action.args.iban.matches(r"^[A-Z]{2}\d{2}") && input.x == 1')
    assert expr.paths == frozenset({("action", "args", "iban"), ("input", "x")})


# -- the number of rules ---------------------------------------------------------------


def test_a_contract_over_the_rules_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_CAP_RULES", "3")
    contract_with([rule(f"r{i}", "true", "allow") for i in range(3)])
    with pytest.raises(ContractError) as info:
        contract_with([rule(f"r{i}", "true", "allow") for i in range(4)])
    (issue,) = info.value.issues
    assert issue.path == "policy.rules"
    assert "the number of policy rules is 4, over the limit of 3 (rules)" in issue.message
    assert "CHARTER_CAP_RULES=N" in issue.message


PACK = """\
pack: guard
applies_to: {domains: ["*"]}
rules:
  - {id: a, when: 'true', effect: allow}
  - {id: b, when: 'true', effect: allow}
"""


def test_a_pack_over_the_rules_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_CAP_RULES", "1")
    with pytest.raises(ContractError) as info:
        pack(PACK)
    (issue,) = info.value.issues
    assert issue.path == "rules"
    assert "(rules)" in issue.message


def test_a_contract_and_its_packs_together_over_the_rules_cap_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = pack(PACK)
    monkeypatch.setenv("CHARTER_CAP_RULES", "3")
    contract_with([rule("x", "true", "allow")], packs=[guard])
    with pytest.raises(ContractError) as info:
        contract_with([rule("x", "true", "allow"), rule("y", "true", "allow")], packs=[guard])
    (issue,) = info.value.issues
    assert issue.path == "policy.rules"
    assert "is 4, over the limit of 3 (rules)" in issue.message
    assert "2 from contract, 2 from guard" in issue.message
