"""The small CEL interface: compile once, evaluate against one environment."""

from __future__ import annotations

import pytest

from charter.errors import CelCompileError, CelEvalError
from charter.policy.cel import Environment, compile_expression
from tests.helpers import NOW, contract_with, rule


def test_compile_reports_references() -> None:
    e = compile_expression('action.name.lowerAscii() == "x" && size(context.items) > 0')
    assert e.source.startswith("action.name")
    assert {"action", "context"} <= e.variables
    assert {"lowerAscii", "size"} <= e.functions


def test_compile_error_keeps_the_diagnostic_without_the_source_prefix() -> None:
    with pytest.raises(CelCompileError) as info:
        compile_expression("a ==")
    message = str(info.value)
    assert "Syntax error" in message
    assert "Failed to parse expression" not in message
    assert "| a ==" in message  # CEL's caret diagram


def test_evaluation_errors_are_cel_eval_errors() -> None:
    env = Environment({"context": {"a": 1}}, {})
    with pytest.raises(CelEvalError, match="no such key: b"):
        compile_expression("context.b == 1").evaluate(env)
    with pytest.raises(CelEvalError, match="No such overload"):
        compile_expression('context.a + "x" == 1').evaluate(env)
    assert compile_expression("context.a + 1").evaluate(env) == 2


def test_environment_converts_only_needed_variables() -> None:
    env = Environment({"a": 1, "b": object()}, {}, needed=["a"])  # b could not be converted
    assert compile_expression("a == 1").evaluate(env) is True


def test_custom_functions_are_callable() -> None:
    env = Environment({}, {"double_it": lambda x: x * 2})
    assert compile_expression("double_it(21) == 42").evaluate(env) is True


@pytest.mark.parametrize(
    ("when", "matches"),
    [
        ('action.args.to.lowerAscii() == "dana@example.com"', True),
        ('action.args.to.upperAscii() == "DANA@EXAMPLE.COM"', True),
        ('action.args.pad.trim() == "x"', True),
        ('action.args.csv.split(",") == ["a", "b", "c"]', True),
        ('action.args.csv.split(",").join("|") == "a|b|c"', True),
        ('action.args.csv.replace(",", ";") == "a;b;c"', True),
        ('action.args.to.lowerAscii().endsWith("@example.org")', False),
    ],
)
def test_string_helpers_are_callable_from_rules(when: str, matches: bool) -> None:
    c = contract_with([rule("s", when, "review"), rule("ok", "true", "allow")])
    d = c.decide(
        action={"name": "note", "args": {"to": "Dana@Example.COM", "pad": "  x ", "csv": "a,b,c"}},
        now=NOW,
    )
    assert d.errors == ()
    assert d.effect == ("review" if matches else "allow")
