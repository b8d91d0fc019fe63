"""Meaning checks beyond the schema, and the published schemas themselves."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from charter import ContractError
from charter.contract.sections import Autonomy
from charter.contract.validate import KNOWN_FUNCTIONS, schema
from tests.helpers import BASE, build, document, rule, with_rules


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ContractError) as info:
        build(data)
    return [(i.path, i.message) for i in info.value.issues]


@pytest.mark.parametrize("name", ["contract", "pack"])
def test_published_schemas_are_valid_2020_12_schemas(name: str) -> None:
    sch = schema(name)
    Draft202012Validator.check_schema(sch)
    assert sch["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_contract_schema_requires_the_stable_keys() -> None:
    sch = schema("contract")
    assert set(sch["required"]) == {"contract", "version", "domain", "input", "actions", "policy"}
    for key in (
        "description",
        "channels",
        "escalation",
        "budget",
        "model",
        "success",
        "value",
        "autonomy",
    ):
        assert key in sch["properties"]


def test_the_base_contract_is_valid() -> None:
    assert build(BASE).ref == "shop@1"


@pytest.mark.parametrize(
    "when",
    [
        '"A".lowerAscii() == "a"',
        '"a".upperAscii() == "A"',
        '" a ".trim() == "a"',
        '"a,b".split(",").size() == 2',
        '["a", "b"].join("-") == "a-b"',
        '"aa".replace("a", "b") == "bb"',
        "[1, 1].distinct().size() == 1",
        "[[1], [2]].flatten().size() == 2",
        "sum([1, 2]) == 3",
        'size(action.args) > 0 && string(1) == "1"',
        'now > timestamp("2020-01-01T00:00:00Z") && duration("1h") > duration("1m")',
        '"untrusted" in provenance(action.args).labels',
        'count("email", {}, duration("1h")) > 2',
        "context.items.exists(i, i > 2) && context.items.all(i, i > 0)",
    ],
)
def test_functions_policies_may_call_are_accepted(when: str) -> None:
    build(with_rules([rule("r", when, "deny")]))


@pytest.mark.parametrize(
    ("when", "function"),
    [
        ('action.name.toLower() == "x"', "toLower"),
        ("max(1, 2) == 2", "max"),  # not provided by the CEL runtime: would always fail closed
        ("min(1, 2) == 1", "min"),
        ('bool("true")', "bool"),
        ("provenanse(action.args).labels.size() > 0", "provenanse"),
    ],
)
def test_unknown_functions_are_reported_at_load(when: str, function: str) -> None:
    assert issues_of(with_rules([rule("r", when, "deny")])) == [
        ("policy.rules[0].when", f"CEL expression calls unknown function {function!r}")
    ]


def test_misspelt_variables_are_reported_but_comprehension_variables_are_not() -> None:
    assert issues_of(with_rules([rule("r", 'acton.name == "x"', "deny")])) == [
        ("policy.rules[0].when", "CEL expression uses unknown variable 'acton'")
    ]
    ok = 'context.items.exists(o, o.id == "x") && [1, 2].all(n, n > 0)'
    assert build(with_rules([rule("r", ok, "deny")])).engine.rules[0].id == "r"


def test_namespaced_extensions_are_not_registered() -> None:
    assert issues_of(with_rules([rule("r", "math.greatest(1, 2) == 2", "deny")])) == [
        ("policy.rules[0].when", "CEL expression calls unknown function 'greatest'"),
        ("policy.rules[0].when", "CEL expression uses unknown variable 'math'"),
    ]


def test_every_known_function_is_defined_at_run_time() -> None:
    """A name the loader accepts must not be 'undefined' when a rule calls it."""
    from charter.policy.cel import Environment, compile_expression

    calls = {
        "size": 'size("a")',
        "contains": '"a".contains("a")',
        "startsWith": '"a".startsWith("a")',
        "endsWith": '"a".endsWith("a")',
        "matches": '"a".matches("a")',
        "int": 'int("1")',
        "uint": "uint(1)",
        "double": "double(1)",
        "string": "string(1)",
        "bytes": 'bytes("a")',
        "timestamp": 'timestamp("2026-01-01T00:00:00Z")',
        "duration": 'duration("1h")',
        "dyn": "dyn(1)",
        "type": "type(1)",
        "count": 'count("a", {}, "1h")',
        "provenance": 'provenance("a")',
        "distinct": "[1].distinct()",
        "flatten": "[[1]].flatten()",
        "charAt": '"a".charAt(0)',
        "indexOf": '"a".indexOf("a")',
        "lastIndexOf": '"a".lastIndexOf("a")',
        "substring": '"ab".substring(1)',
        "lowerAscii": '"a".lowerAscii()',
        "upperAscii": '"a".upperAscii()',
        "trim": '"a".trim()',
        "split": '"a".split(",")',
        "join": '["a"].join(",")',
        "replace": '"a".replace("a", "b")',
        "sum": "sum([1, 2])",
    }
    getters = {f for f in KNOWN_FUNCTIONS if f.startswith("get")}
    for g in getters:
        calls[g] = f"now.{g}()"
    # a function added to KNOWN_FUNCTIONS needs an example call here
    assert set(KNOWN_FUNCTIONS) == set(calls), set(KNOWN_FUNCTIONS) ^ set(calls)
    from datetime import UTC, datetime

    env = Environment(
        {"now": datetime(2026, 1, 1, tzinfo=UTC)},
        {"count": lambda *a: 0, "provenance": lambda v: {"labels": [], "channels": []}},
    )
    for name, source in calls.items():
        compile_expression(source).evaluate(env)  # raises if undefined
        assert name in compile_expression(source).functions


def test_success_and_value_expressions_are_checked() -> None:
    data = document(success=["outcome.x >"], value={"expr": "nope(outcome.y)", "unit": "USD"})
    got = issues_of(data)
    assert [p for p, _ in got] == ["success[0]", "value.expr"]
    assert "does not compile" in got[0][1]
    assert got[1][1] == "CEL expression calls unknown function 'nope'"


def test_an_action_cannot_compensate_itself() -> None:
    data = document()
    data["actions"]["refund"]["compensate"] = "refund"
    assert issues_of(data) == [("actions.refund.compensate", "an action cannot compensate itself")]


def test_compensate_naming_a_declared_action_is_fine() -> None:
    data = document()
    data["actions"]["refund"]["compensate"] = "note"
    assert build(data).actions["refund"].compensate == "note"


def test_reads_must_name_declared_channels() -> None:
    data = document()
    data["actions"]["refund"]["reads"] = ["crm.customer", "orders"]
    assert issues_of(data) == [("actions.refund.reads[1]", "reads undeclared channel 'orders'")]


def test_flow_rule_ids_are_reserved() -> None:
    got = issues_of(with_rules([rule("flow:email", "true", "allow")]))
    assert ("policy.rules[0].id", "rule id 'flow:email' is reserved for built-in flow rules") in got


def test_invalid_channel_names_point_at_the_name() -> None:
    data = document()
    data["channels"]["CRM Notes"] = {"labels": []}
    assert issues_of(data) == [("channels.CRM Notes", "invalid name 'CRM Notes'")]


def test_optional_sections_load_and_are_validated() -> None:
    data = document(
        model={"provider": "scripted", "name": "demo", "temperature": 0, "seed": 7},
        escalation={"reviewers": ["leads"], "sla": "4h", "on_timeout": "deny"},
        budget={"max_model_calls": 3, "max_cost_usd": 0.5, "max_actions": 2},
        success=["outcome.ok == true"],
        value={"expr": "outcome.minutes * 0.5", "unit": "USD"},
        autonomy={"level": "shadow", "sample_rate": 0.1},
    )
    c = build(data)
    assert c.model.provider == "scripted"
    assert c.escalation.reviewers == ("leads",)
    assert c.escalation.sla is not None and c.escalation.sla.total_seconds() == 4 * 3600
    assert c.budget.max_actions == 2
    assert [s.source for s in c.success] == ["outcome.ok == true"]
    assert c.autonomy.level == "shadow"

    data["autonomy"] = {"level": "yolo"}
    data["budget"] = {"max_cost_usd": -1}
    got = issues_of(data)
    assert sorted(p for p, _ in got) == ["autonomy.level", "budget.max_cost_usd"]


def test_defaults_of_optional_sections() -> None:
    c = build(document())
    assert c.escalation.on_timeout == "deny"
    assert c.escalation.sla is None
    assert c.autonomy == Autonomy(level="supervised")
    assert c.engine.default == "deny"
    assert c.engine.on_error == "deny"
    assert c.actions["refund"].egress == "internal"


@pytest.mark.parametrize(
    ("when", "literal"),
    [
        ('now - duration("1d") > now', 'duration("1d")'),
        ("duration('2 hours') > duration('1h')", "duration('2 hours')"),
        ('now > timestamp("2026-13-01T00:00:00Z")', 'timestamp("2026-13-01T00:00:00Z")'),
    ],
)
def test_time_literals_cel_rejects_are_reported_at_load(when: str, literal: str) -> None:
    assert issues_of(with_rules([rule("r", when, "deny")])) == [
        ("policy.rules[0].when", f"CEL cannot evaluate {literal}")
    ]


def test_valid_time_literals_load() -> None:
    when = 'now - duration("24h") < timestamp("2026-01-31T12:00:00Z") && duration("1h30m") > duration("90s")'
    build(with_rules([rule("r", when, "deny")]))


# -- limits (see "Limits" in docs/policy.md) ---------------------------------------------

THIRTY = "[" + ", ".join(str(i) for i in range(30)) + "]"
#: 30**4 iterations of the innermost body: over the default expression_cost cap
FOUR_DEEP = (
    f"{THIRTY}.all(a, {THIRTY}.all(b, {THIRTY}.all(c, {THIRTY}.all(d, a + b + c + d >= 0))))"
)


def test_an_expression_over_the_cost_cap_is_located_wherever_it_is() -> None:
    found = issues_of(
        with_rules(
            [rule("deep", FOUR_DEEP, "deny"), rule("fine", "true", "allow")],
            success=[FOUR_DEEP],
            value={"expr": f"size({FOUR_DEEP.replace('.all(', '.map(')})", "unit": "USD"},
        )
    )
    paths = [path for path, _ in found]
    assert paths == ["policy.rules[0].when", "success[0]", "value.expr"]
    for _, message in found:
        assert message.startswith("CEL expression may be too expensive to evaluate: ")
        assert "over the limit of 1,000,000 (expression_cost)" in message
        assert "CHARTER_CAP_EXPRESSION_COST=N" in message


def test_the_cost_cap_can_be_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_CAP_EXPRESSION_COST", "100000000")
    assert build(with_rules([rule("deep", FOUR_DEEP, "deny")])).engine.rules[0].id == "deep"


def test_the_rules_cap_is_an_issue_at_the_rule_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_CAP_RULES", "2")
    found = issues_of(with_rules([rule(f"r{i}", "true", "allow") for i in range(3)]))
    assert found == [
        (
            "policy.rules",
            "the number of policy rules is 3, over the limit of 2 (rules); "
            "raise it with CHARTER_CAP_RULES=N if this input is expected",
        )
    ]


def test_the_length_cap_names_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_CAP_EXPRESSION_CHARS", "30")
    when = "action.args.amount > 100 && action.args.amount < 200"
    ((path, message),) = issues_of(with_rules([rule("long", when, "deny")]))
    assert path == "policy.rules[0].when"
    assert message.startswith(f"CEL expression is too long ({len(when)} characters): ")
    assert "(expression_chars); raise it with CHARTER_CAP_EXPRESSION_CHARS=N" in message


def test_privacy_subject_must_name_a_field_of_the_input() -> None:
    customer = {
        "type": "object",
        "properties": {"customer": {"type": "object", "properties": {"id": {"type": "string"}}}},
    }
    data = document(input=customer, privacy={"subject": "customer.ident"})
    assert issues_of(data) == [
        (
            "privacy.subject",
            "privacy.subject names 'customer.ident', but customer has no property 'ident'",
        )
    ]
    data = document(input=customer, privacy={"subject": "customer_id"})
    assert issues_of(data) == [
        (
            "privacy.subject",
            "privacy.subject names 'customer_id', but the input has no property 'customer_id'",
        )
    ]
    assert build(document(input=customer, privacy={"subject": "customer.id"})).privacy.subject == (
        "customer.id"
    )
