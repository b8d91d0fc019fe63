"""The small interface Charter uses to compile and evaluate CEL.

Everything CEL-specific lives here so the rest of the engine depends on two operations —
compile an expression once, evaluate many compiled expressions against one environment —
and could move to another CEL implementation without touching policy semantics.

The environment is built once per decision and every rule of that decision point runs
against it. Converting Python values to CEL values is the expensive part (about 2 µs per
string, map or list, far more than evaluating a typical rule), so compiling an expression
also records, from its tokens, which parts of the variables it can read
(:attr:`Expression.paths`) and its leading ``path == "literal"`` test
(:attr:`Expression.guard`); the engine uses them to convert only what its rules can read.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel
from cel.stdlib import EXTENSIONS

from charter.caps import CAPS
from charter.errors import CelCompileError, CelEvalError
from charter.policy.cost import (
    ASSUMED_SIZE,
    GUARD_COST,
    MACRO_CALL,
    MAX_CHAINED_OPERATORS,
    TICK,
    Budget,
    chained_operators,
    estimate_cost,
    instrument,
    out_of_time,
    worst_size,
)
from charter.policy.fields import (
    ELEMENT,
    VARIABLES,
    Path,
    Shape,
    leading_guard,
    prune,
    shape_of,
    variable_paths,
)
from charter.policy.lexer import tokenize

__all__ = [  # what the engine and the validator use, in one place
    "ASSUMED_SIZE",
    "BUILTIN_FUNCTIONS",
    "ELEMENT",
    "GUARD_COST",
    "LIST_FUNCTIONS",
    "STRING_FUNCTIONS",
    "TICK",
    "VARIABLES",
    "Budget",
    "Environment",
    "Expression",
    "Path",
    "Shape",
    "compile_expression",
    "error_message",
    "estimate_cost",
    "is_panic",
    "out_of_time",
    "prune",
    "shape_of",
    "worst_size",
]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def _lower_ascii(s: Any) -> Any:
    """``lowerAscii`` as in the extension library, at C speed for strings.

    The library's version builds the result a character at a time, which made it the most
    expensive part of a rule that uses it; ``str.translate`` with an A-Z table changes
    exactly the same characters. Anything but a ``str`` goes to the library's version so
    that errors (and their messages) stay the same.
    """
    if type(s) is str:
        return s.translate(_ASCII_LOWER)
    return EXTENSIONS["strings"]["lowerAscii"](s)


def _upper_ascii(s: Any) -> Any:
    """``upperAscii``; see :func:`_lower_ascii`."""
    if type(s) is str:
        return s.translate(_ASCII_UPPER)
    return EXTENSIONS["strings"]["upperAscii"](s)


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
} | {"lowerAscii": _lower_ascii, "upperAscii": _upper_ascii}
LIST_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "distinct": EXTENSIONS["lists"]["distinct"],
    "flatten": EXTENSIONS["lists"]["flatten"],
    # sum(list) totals numbers, e.g. the amounts of executed refunds in an outcome rule
    "sum": EXTENSIONS["core"]["sum"],
}

#: Every helper above, merged once rather than per decision.
BUILTIN_FUNCTIONS: dict[str, Callable[..., Any]] = {**STRING_FUNCTIONS, **LIST_FUNCTIONS}


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression with the top-level names it references.

    ``paths`` are the static field paths through which the expression can read the
    :data:`VARIABLES` (``("context", "orders", "items")`` for ``context.orders.items.exists(
    ...)``): it can observe nothing of a variable outside them, so a value pruned to these
    paths evaluates identically. ``None`` when the source could not be analysed; then every
    referenced variable must be converted whole. ``guard`` is a leading conjunct
    ``path == "literal"`` (``action.name == "send_email" && ...``): when the value at that
    path is a different string, the expression is ``false`` whatever the rest would give,
    because CEL's ``&&`` is false as soon as one side is false, errors included. When it
    is the same string, the expression's value is that of the rest of the conjunction,
    compiled as ``unguarded``, whenever that is ``true`` or ``false`` (``true && b`` is
    ``b``); for anything else (an error, a non-boolean) evaluate the expression as written.
    When the expression has a ``guarded`` program, ``unguarded`` has the same deadline
    checks.
    """

    source: str
    program: Any
    variables: frozenset[str]
    functions: frozenset[str]
    paths: frozenset[Path] | None = None
    guard: tuple[Path, str] | None = None
    unguarded: Any = None
    #: the estimated worst-case cost of one evaluation (:func:`estimate_cost`)
    cost: int = 0
    #: the program with a deadline check in every comprehension body, for expressions
    #: whose evaluation time depends on the data or is high (see :class:`Budget`)
    guarded: Any = None

    def evaluate(self, env: Environment) -> Any:
        """The expression's value; :class:`CelEvalError` if it fails or runs out of time.

        The time limit is the ``decision_ms`` cap, for this one evaluation.
        """
        program = self.program
        budget = None
        if self.guarded is not None:
            budget = Budget(CAPS["decision_ms"].limit)
            env.context.add_function(TICK, budget.ticker())
            program = self.guarded
            budget.start()
        try:
            return program.execute(env.context)
        except Exception as exc:
            if budget is not None and budget.expired():
                raise CelEvalError(budget.message()) from None
            raise CelEvalError(error_message(exc)) from None
        except BaseException as exc:
            if not is_panic(exc):
                raise
            raise CelEvalError(error_message(exc)) from None


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of the Rust side (``pyo3_runtime.PanicException``).

    PyO3 raises it as a ``BaseException`` so that ``except Exception`` does not swallow it;
    Charter turns exactly this class into an error of the expression, and nothing else that
    is not an ``Exception`` (``KeyboardInterrupt`` still interrupts).
    """
    return type(exc).__name__ == "PanicException"


def error_message(exc: BaseException) -> str:
    """The message of the :class:`CelEvalError` that evaluating raises for ``exc``.

    Exposed so that a caller evaluating many programs in a loop (the engine) can call
    ``program.execute`` directly and build the same message only when one fails.
    """
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else exc}"
    return _first_line(str(exc)) or type(exc).__name__


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def compile_expression(source: str) -> Expression:
    """Compile ``source``; raise :class:`CelCompileError` with CEL's diagnostic if it fails.

    Refused before the CEL parser sees them, because the parser cannot refuse them
    itself: sources longer than the ``expression_chars`` cap, and sources with more than
    :data:`MAX_CHAINED_OPERATORS` operators that build left-deep trees (``a.b.c…``,
    ``1+1+…``), on which the native parser overflows its stack and the process dies. A
    panic of the parser (a syntax error past column 65535) is a :class:`CelCompileError`
    too. The result carries the expression's estimated cost (:func:`estimate_cost`); the
    caller decides whether that is too much (the contract validator does).
    """
    chars = CAPS["expression_chars"]
    if len(source) > chars.limit:
        raise CelCompileError(chars.exceeded(len(source)))
    tokens = tokenize(source)
    chained = chained_operators(tokens, source)
    if chained > MAX_CHAINED_OPERATORS:
        raise CelCompileError(
            f"the CEL expression has {chained:,} member, index, arithmetic and comparison "
            f"operators, more than the {MAX_CHAINED_OPERATORS:,} the CEL parser can nest safely"
        )
    program = _compile(source)
    refs = program.references()
    variables = frozenset(refs.get("variables", ()))
    paths = variable_paths(tokens, variables) if tokens is not None else None
    guard = leading_guard(tokens) if paths is not None and tokens is not None else None
    unguarded = None
    if guard is not None:
        try:
            unguarded = _compile(source[guard[2] :])
        except CelCompileError:
            guard = None  # cannot happen for a valid conjunction; then just no guard
    cost = estimate_cost(source, tokens)
    guarded = None
    if (
        tokens is not None
        and MACRO_CALL.search(source) is not None  # only comprehensions get checks
        and estimate_cost(source, tokens, worst_size()) >= GUARD_COST
    ):
        instrumented = instrument(source, tokens)
        if instrumented is not None:
            try:
                guarded = _compile(instrumented)
                if guard is not None:
                    # the guard's `a.b == "x" &&` holds no comprehension, so the checks
                    # start after it: the rest of the instrumented source is the rest
                    unguarded = _compile(instrumented[guard[2] :])
            except CelCompileError:
                guarded = None  # the lexer misread the source; the clock still bounds it
                guard = None
    return Expression(
        source=source,
        program=program,
        variables=variables,
        functions=frozenset(refs.get("functions", ())),
        paths=paths,
        guard=guard[:2] if guard is not None else None,
        unguarded=unguarded,
        cost=cost,
        guarded=guarded,
    )


def _compile(source: str) -> Any:
    """``cel.compile(source)``, with every failure a :class:`CelCompileError`."""
    try:
        return cel.compile(source)
    except Exception as exc:
        message = str(exc)
        prefix = f"Failed to parse expression '{source}': "
        message = message.removeprefix(prefix)
        raise CelCompileError(message.strip()) from None
    except BaseException as exc:
        if not is_panic(exc):
            raise
        raise CelCompileError(
            f"the CEL parser failed on this expression ({error_message(exc)}); "
            "check its syntax near the end of a very long line"
        ) from None


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
        merged = {**BUILTIN_FUNCTIONS, **functions} if functions else BUILTIN_FUNCTIONS
        self.context = cel.Context(values, merged)

    @classmethod
    def of(cls, values: dict[str, Any], functions: dict[str, Callable[..., Any]]) -> Environment:
        """An environment of exactly these values and functions, with no copying or merging.

        For callers (the engine) that have already chosen, per decision point, the
        variables, the parts of them and the functions their expressions can use.
        """
        env = cls.__new__(cls)
        env.context = cel.Context(values, functions)
        return env
