"""The small interface Charter uses to compile and evaluate CEL.

Everything CEL-specific lives here so the rest of the engine depends on two operations —
compile an expression once, evaluate many compiled expressions against one environment —
and could move to another CEL implementation without touching policy semantics.

The environment is built once per decision (converting Python values to CEL values is the
expensive part) and every rule of that decision point runs against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel
from cel.stdlib import EXTENSIONS

#: String helpers that policies need and the CEL core lacks. They come from the
#: ``common-expression-language`` package's cel-go-compatible extension library.
STRING_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: EXTENSIONS["strings"][name]
    for name in (
        "lowerAscii",
        "upperAscii",
        "trim",
        "split",
        "join",
        "replace",
        "charAt",
        "indexOf",
        "lastIndexOf",
        "substring",
    )
}
LIST_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "distinct": EXTENSIONS["lists"]["distinct"],
    "flatten": EXTENSIONS["lists"]["flatten"],
    "sets.contains": EXTENSIONS["sets"]["sets.contains"],
    "sets.intersects": EXTENSIONS["sets"]["sets.intersects"],
    "math.greatest": EXTENSIONS["math"]["math.greatest"],
    "math.least": EXTENSIONS["math"]["math.least"],
}

#: Variables a policy expression may reference at the top level.
VARIABLES = ("action", "input", "context", "proposal", "run", "now", "outcome")


class CelCompileError(ValueError):
    """An expression that does not parse; the message keeps CEL's own caret diagram."""


class CelEvalError(RuntimeError):
    """An expression that failed while evaluating (missing field, wrong types, ...)."""


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with the top-level names it references."""

    source: str
    program: Any
    variables: frozenset[str]
    functions: frozenset[str]

    def evaluate(self, env: Environment) -> Any:
        try:
            return self.program.execute(env.context)
        except KeyError as exc:
            raise CelEvalError(f"no such key: {exc.args[0] if exc.args else exc}") from None
        except Exception as exc:
            raise CelEvalError(_first_line(str(exc)) or type(exc).__name__) from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def compile_expression(source: str) -> Expression:
    """Compile ``source``; raise :class:`CelCompileError` with CEL's diagnostic if it fails."""
    try:
        program = cel.compile(source)
    except Exception as exc:
        message = str(exc)
        prefix = f"Failed to parse expression '{source}': "
        message = message.removeprefix(prefix)
        raise CelCompileError(message.strip()) from None
    refs = program.references()
    return Expression(
        source=source,
        program=program,
        variables=frozenset(refs.get("variables", ())),
        functions=frozenset(refs.get("functions", ())),
    )


class Environment:
    """Variables and functions for one decision, converted to CEL once."""

    __slots__ = ("context",)

    def __init__(
        self,
        variables: Mapping[str, Any],
        functions: Mapping[str, Callable[..., Any]],
        needed: Iterable[str] | None = None,
    ) -> None:
        names = set(needed) if needed is not None else set(variables)
        values = {k: v for k, v in variables.items() if k in names}
        self.context = cel.Context(values, {**STRING_FUNCTIONS, **LIST_FUNCTIONS, **functions})
