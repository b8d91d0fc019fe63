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

import itertools
import logging
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import cel
from cel.stdlib import EXTENSIONS

from charter.caps import CAPS
from charter.errors import CelCompileError, CelEvalError

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

#: Variables a policy expression may reference at the top level.
VARIABLES = ("action", "input", "context", "proposal", "run", "now", "outcome")

#: Which parts of a value to convert: for each key the part of its value to keep, ``None``
#: meaning all of it. A variable's shape of ``None`` keeps the whole variable. The key
#: :data:`ELEMENT` (never a field name: it is not an identifier) stands for every element
#: of a list that a comprehension (``exists``, ``all``, ...) iterates over.
Shape: TypeAlias = dict[str, "Shape | None"]

#: A static field path: a variable name, then the field names selected from it, with
#: :data:`ELEMENT` for "each element of this list".
Path: TypeAlias = tuple[str, ...]

ELEMENT = "[]"

#: Comprehensions whose result is computed from the iteration variable alone, so what the
#: body reads of it is all that is read of each element. ``filter`` returns elements
#: themselves, so it (and any other method) reads its receiver whole.
_ELEMENT_MACROS = frozenset({"all", "exists", "exists_one", "map"})


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
    tokens = _tokenize(source)
    chained = _chained_operators(tokens, source)
    if chained > MAX_CHAINED_OPERATORS:
        raise CelCompileError(
            f"the CEL expression has {chained:,} member, index, arithmetic and comparison "
            f"operators, more than the {MAX_CHAINED_OPERATORS:,} the CEL parser can nest safely"
        )
    program = _compile(source)
    refs = program.references()
    variables = frozenset(refs.get("variables", ()))
    paths = _variable_paths(tokens, variables) if tokens is not None else None
    guard = _guard(tokens) if paths is not None and tokens is not None else None
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
        and _MACRO_CALL.search(source) is not None  # only comprehensions get checks
        and estimate_cost(source, tokens, worst_size()) >= GUARD_COST
    ):
        instrumented = _instrument(source, tokens)
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


# -- static analysis of an expression's tokens -----------------------------------------
#
# The analysis is deliberately lexical and conservative: anything it does not fully
# understand makes it give up (``None``), and the engine then converts whole variables,
# exactly as if there were no analysis. It only has to find every place where a variable
# name occurs and which field names follow it; it never needs the expression's structure
# beyond paren depth.

#: (kind, text, decoded value of a plain string literal, offset in the source)
_Token: TypeAlias = tuple[str, str, str | None, int]

_LEXEME = re.compile(
    r"""
    (?P<space>[ \t\n\r\f]+|//[^\n]*)
    |(?P<quote>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"|'''|"|'))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
    |(?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)
    |(?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE,
)


def _tokenize(source: str) -> list[_Token] | None:
    """CEL tokens without spaces and comments; ``None`` for anything unexpected."""
    tokens: list[_Token] = []
    pos, end = 0, len(source)
    while pos < end:
        m = _LEXEME.match(source, pos)
        if m is None:
            return None
        kind = m.lastgroup
        if kind == "space":
            pos = m.end()
        elif kind == "quote":
            literal = _string_literal(source, m.start(), m.end())
            if literal is None:
                return None
            pos, value = literal
            tokens.append(("string", source[m.start() : pos], value, m.start()))
        else:
            assert kind is not None
            tokens.append((kind, m.group(), None, m.start()))
            pos = m.end()
    return tokens


def _string_literal(source: str, start: int, body: int) -> tuple[int, str | None] | None:
    """End of the string literal opened at ``start`` (its body begins at ``body``).

    Also returns its value when it is a plain one-line literal without escapes (the only
    kind a guard compares with), else ``None``. A raw string (``r"\\d+"``) has no escapes,
    so it ends at the first closing quote, as CEL's own lexer has it.
    """
    opening = source[start:body]
    quote = opening.lstrip("rRbB")
    prefix = opening[: len(opening) - len(quote)].lower()
    raw = "r" in prefix
    pos = body
    while True:
        close = source.find(quote, pos)
        if close < 0:
            return None
        if raw:  # no escapes in a raw string: it ends at the first closing quote, as in CEL
            break
        escape = source.find("\\", pos, close)
        if escape < 0:
            break
        pos = escape + 2
    text = source[body:close]
    if len(quote) == 1 and "\n" in text:
        return None
    plain = not prefix and len(quote) == 1 and "\\" not in text
    return close + len(quote), text if plain else None


def _variable_paths(tokens: list[_Token], referenced: frozenset[str]) -> frozenset[Path] | None:
    """The paths through which the expression reads each of the :data:`VARIABLES`.

    ``None`` if the tokens are not understood, or if the compiler reports a variable the
    tokens do not show, which would mean the lexer is wrong about this source.
    """
    paths: set[Path] = set()
    for name in VARIABLES:
        uses = _uses(tokens, 0, len(tokens), name)
        if uses is None:
            return None
        paths.update((name, *use) for use in uses)
    seen = {p[0] for p in paths}
    if any(v in VARIABLES and v not in seen for v in referenced):
        return None
    return frozenset(paths)


def _uses(tokens: list[_Token], start: int, end: int, name: str) -> set[Path] | None:
    """How ``tokens[start:end]`` reads ``name``: one path (relative to it) per occurrence.

    An occurrence reads the ``.field.field`` chain that follows it, up to the first token
    that is not ``.field``; a variable followed by anything else (an index, an operator, a
    closing bracket) is read whole, i.e. the path is ``()``. A chain that ends in a method
    call reads its receiver whole (``x.lowerAscii()`` reads ``x``), except the
    comprehensions of :data:`_ELEMENT_MACROS`, which read of each element of the receiver
    only what their body reads of the iteration variable. Names are not scoped: a
    comprehension variable that shadows ``name``, or a field called ``name``
    (``x.context``), only adds paths, which keeps more than needed and is therefore safe.
    """
    uses: set[Path] = set()
    for i in range(start, end):
        kind, text = tokens[i][:2]
        if kind != "ident" or text != name:
            continue
        path: list[str] = []
        j = i + 1
        while j + 1 < end and tokens[j][:2] == ("op", ".") and tokens[j + 1][0] == "ident":
            path.append(tokens[j + 1][1])
            j += 2
        if not path or j >= end or tokens[j][:2] != ("op", "("):
            uses.add(tuple(path))
            continue
        method = path.pop()  # a call: reads its receiver
        element = _comprehension(tokens, j, end) if method in _ELEMENT_MACROS else None
        if element is None:
            uses.add(tuple(path))
            continue
        variable, close = element
        inner = _uses(tokens, j + 3, close, variable)
        if inner is None:
            return None
        uses.update((*path, ELEMENT, *use) for use in inner or {()})
    return uses


def _comprehension(tokens: list[_Token], open_: int, end: int) -> tuple[str, int] | None:
    """For ``.exists(x, ...)`` with ``(`` at ``open_``: ``x`` and the index of ``)``.

    ``None`` (read the receiver whole) for anything else, including the two-variable
    forms ``all(i, v, ...)``, whose first variable is not the element.
    """
    if open_ + 4 >= end:
        return None
    var, comma, second, after = tokens[open_ + 1 : open_ + 5]
    if var[0] != "ident" or comma[:2] != ("op", ","):
        return None
    if second[0] == "ident" and after[:2] == ("op", ","):
        return None
    for k, text, depth in _operators(tokens, open_, end):
        if depth == 0 and text in _CLOSE:
            return var[1], k
    return None


_OPEN = frozenset("([{")
_CLOSE = frozenset(")]}")


def _operators(tokens: list[_Token], start: int, end: int) -> Iterator[tuple[int, str, int]]:
    """``(index, text, bracket depth after it)`` of each operator token in [start, end)."""
    depth = 0
    for k in range(start, end):
        kind, text = tokens[k][:2]
        if kind != "op":
            continue
        if text in _OPEN:
            depth += 1
        elif text in _CLOSE:
            depth -= 1
        yield k, text, depth


def _guard(tokens: list[_Token]) -> tuple[Path, str, int] | None:
    """The leading ``a.b == "literal" &&`` of a top-level conjunction, if there is one.

    Without ``||`` or ``?`` outside brackets, an expression is a chain of ``&&`` whose
    operands bind tighter, so the tokens before the first ``&&`` are its first operand,
    and the source from the token after it is the conjunction of the others. Returns the
    path, the literal and where that rest starts.
    """
    for _, text, depth in _operators(tokens, 0, len(tokens)):
        if depth == 0 and text in ("||", "?"):
            return None
    if len(tokens) < 6 or tokens[5][:2] != ("op", "&&") or tokens[3][:2] != ("op", "=="):
        return None
    head, tail = tokens[0:3], tokens[4]
    if tail[0] == "string" and tail[2] is not None:
        literal = tail[2]
    else:
        return None
    if (
        head[0][0] == "ident"
        and head[0][1] in VARIABLES
        and head[1][:2] == ("op", ".")
        and head[2][0] == "ident"
    ):
        return (head[0][1], head[2][1]), literal, tokens[6][3]
    return None


def shape_of(paths: Iterable[Path]) -> dict[str, Shape | None]:
    """The :data:`Shape` of each variable that covers every path; a shorter path wins."""
    root: Shape = {}
    for path in sorted(set(paths), key=len):
        node = root
        for depth, key in enumerate(path):
            if key in node and node[key] is None:
                break  # a prefix is already kept whole
            if depth == len(path) - 1:
                node[key] = None
                break
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
    return root


def prune(value: Any, shape: Shape | None) -> Any:
    """``value`` reduced to ``shape``: maps keep only the listed keys they have.

    Lists that a comprehension iterates keep every element, each reduced to the
    :data:`ELEMENT` shape; a map that a comprehension iterates (over its keys) is kept
    whole. Anything else is kept as it is, so a path that selects a field of a string or a
    list fails in CEL exactly as it would on the whole value.
    """
    if shape is None:
        return value
    kind = type(value)  # exact-type tests first: this runs for every decision
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        if ELEMENT in shape:
            return value
        pruned = {}
        for key, sub in shape.items():
            if key in value:
                pruned[key] = value[key] if sub is None else prune(value[key], sub)
        return pruned
    if (kind is list or isinstance(value, list | tuple)) and ELEMENT in shape:
        element = shape[ELEMENT]
        return value if element is None else [prune(v, element) for v in value]
    return value


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


# -- what one expression may cost ------------------------------------------------------
#
# One rule must not be able to stall every decision of its contract. Two bounds together
# make sure it cannot:
#
# * at load, :func:`estimate_cost` bounds the work of one evaluation from the source alone,
#   and the contract validator refuses expressions over the ``expression_cost`` cap;
# * at run time, what the estimate cannot know (how long the lists in the request are) is
#   bounded by the clock: expressions whose worst case depends on the data, or is high,
#   are compiled a second time with a deadline check (:data:`TICK`) at the start of every
#   comprehension body (:func:`_instrument`), and the engine reads the clock between
#   rules (:class:`Budget`). The CEL evaluator is native code that holds the GIL for the
#   whole evaluation, offers no cancellation and cannot be interrupted from another thread
#   or by a signal; a call back into Python from inside it is the only place to stop it.

#: Elements assumed in a list, map or string whose size depends on the request (a
#: variable, a field of one, ``provenance()``) when estimating cost against the
#: ``expression_cost`` cap. Exact sizes are used for literals and what is built from them.
ASSUMED_SIZE = 100

#: Above this estimated cost (with request data at its largest, :func:`worst_size`), an
#: expression is evaluated with deadline checks. About 0.3 ms of evaluation.
GUARD_COST = 10_000

#: Left-deep chains of this many operators are far below what overflows the CEL parser's
#: native stack (about 12,000 member selections, or 50,000 additions, on an 8 MiB stack),
#: and far above what a condition needs. Whatever ``expression_chars`` allows, longer
#: chains are refused before parsing.
MAX_CHAINED_OPERATORS = 5_000

#: The function called at the start of every comprehension body of a guarded program.
#: Not an identifier a policy can call: the validator rejects it as an unknown function.
TICK = "charter__tick"

#: Cost charged for one ``count()`` call (a history query) and one ``provenance()`` call.
CALL_COST = 100

_SATURATE = 10**18


def worst_size() -> int:
    """The most elements a list or map in a request can have, from the data caps.

    A JSON array of ``n`` elements takes at least ``2n`` bytes (``[0,0,...]``), and no
    request part may exceed the larger of ``input_bytes``, ``argument_bytes`` and
    ``observation_bytes``.
    """
    largest = max(CAPS[n].limit for n in ("input_bytes", "argument_bytes", "observation_bytes"))
    return max(largest // 2, ASSUMED_SIZE)


class DecisionTimeExceededError(Exception):
    """Raised by :meth:`Budget.check` (and so inside CEL, by the ticker) once the deadline
    has passed."""


class Budget:
    """The time left for evaluating one decision's rules (the ``decision_ms`` cap).

    Guarded programs call :data:`TICK` at the start of every comprehension body; the
    function registered under that name is :meth:`ticker`'s. While time is left it returns
    ``True`` (so ``charter__tick() ? (body) : false`` is ``body``); once the deadline has
    passed it raises, which aborts the comprehension, and with it the rule, at once. The
    caller then sees the clock past :attr:`deadline` and fails the rule closed.
    :meth:`check` raises the same way, for Python code the rules call (``count()``,
    ``provenance()``).
    """

    __slots__ = ("deadline", "limit_ms")

    def __init__(self, limit_ms: int) -> None:
        self.limit_ms = limit_ms
        self.deadline = float("inf")

    def start(self) -> float:
        """Start the clock; returns the deadline (a ``time.perf_counter()`` value)."""
        self.deadline = time.perf_counter() + self.limit_ms / 1000
        return self.deadline

    def expired(self) -> bool:
        return time.perf_counter() > self.deadline

    def check(self) -> None:
        """Raise :class:`DecisionTimeExceededError` if the deadline has passed."""
        if time.perf_counter() > self.deadline:
            raise DecisionTimeExceededError(self.message())

    def ticker(self) -> Callable[[], bool]:
        """A function for :data:`TICK`: ``True`` until the deadline, then it raises.

        Each call costs the evaluator a call into Python, once per element of every
        comprehension, so it is made of C parts: the ``__next__`` of a chain of
        ``repeat(True, n)`` runs, where the clock is read (by :meth:`_refill`) only
        between runs, every :data:`_TICKS_PER_CLOCK` calls. That roughly halves what a
        plain method costs per element. Once the deadline has passed, every call raises
        (the first :class:`DecisionTimeExceededError`, then ``StopIteration``).
        """
        chunks = map(self._refill, itertools.count())
        return itertools.chain.from_iterable(chunks).__next__

    def _refill(self, _: int) -> Iterator[bool]:
        self.check()
        return itertools.repeat(True, _TICKS_PER_CLOCK)

    def message(self, where: str = "") -> str:
        return out_of_time(self.limit_ms, self.deadline, where)


#: Comprehension elements between two readings of the clock in a guarded program. An
#: element takes well under a microsecond unless its body does something big, so the
#: clock is read every few tens of microseconds of evaluation.
_TICKS_PER_CLOCK = 32


def out_of_time(limit_ms: int, deadline: float, where: str = "") -> str:
    """The ``decision_ms`` refusal for evaluation that ran past ``deadline`` (now)."""
    elapsed = limit_ms + max(0.0, (time.perf_counter() - deadline) * 1000)
    return CAPS["decision_ms"].exceeded(math.ceil(elapsed), where)


class _QuietBudget(logging.Filter):
    """The ``cel`` package logs a warning for every Python function that raises; running
    out of time is reported in the decision instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return DecisionTimeExceededError.__name__ not in message and f"'{TICK}'" not in message


logging.getLogger("cel").addFilter(_QuietBudget())


def _chained_operators(tokens: list[_Token] | None, source: str) -> int:
    """Operators that can build a left-deep tree: ``.``, ``[``, and binary arithmetic and
    comparisons (``&&`` and ``||`` chains, unary ``!`` and ``-`` are parsed without deep
    recursion). Counted over the whole expression, which over-approximates the deepest
    chain; without tokens, every such character counts."""
    if tokens is None:
        return len(_OPERATOR_CHARS.findall(source))
    count = 0
    previous: _Token | None = None
    for token in tokens:
        kind, text = token[:2]
        if kind == "op" and text in _CHAINING:
            if text != "-" or (previous is not None and _ends_operand(previous)):
                count += 1
        elif kind == "ident" and text == "in":
            count += 1
        previous = token
    return count


_CHAINING = frozenset({".", "[", "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">="})
_OPERATOR_CHARS = re.compile(r"[.\[+\-*/%<>=!]")


def _ends_operand(token: _Token) -> bool:
    kind, text = token[:2]
    return kind in ("ident", "number", "string") or text in _CLOSE


# -- the cost estimate -------------------------------------------------------------------

#: Comprehension macros: ``range.m(var, body)``, and ``range.map(var, predicate, value)``.
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "in": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}

#: The deepest bracket/call/conditional nesting the estimator follows (CEL's own parser
#: stops near 100); deeper sources get the coarse estimate.
_MAX_NESTING = 120


class _Node(NamedTuple):
    """What the estimator knows of a subexpression."""

    #: the work of evaluating it once
    cost: int
    #: a bound on the length of its value (elements of a list or map, characters of a
    #: string; 1 for a scalar)
    length: int
    #: a bound on the length of every value nested inside it (its elements, theirs, ...)
    inner: int
    #: whether the bounds are the assumption for request data rather than exact
    data: bool


_SCALAR = _Node(1, 1, 1, False)


class _UnanalysableError(Exception):
    pass


def estimate_cost(source: str, tokens: list[_Token] | None = None, size: int = ASSUMED_SIZE) -> int:
    """A bound on the work of evaluating ``source`` once, in abstract steps.

    A step is evaluating one node (a literal, a name, an operator, a call) or touching one
    element of a value whose size is known (copying, comparing or converting it); for
    the native evaluator a step is some 10 to 30 ns, so the default ``expression_cost``
    cap of 1,000,000 is a few tens of milliseconds.

    * A comprehension ``r.all(x, body)`` costs ``r`` once plus ``length(r) * (body + 1)``,
      the body's cost including its own comprehensions: nesting multiplies. The same
      holds for ``exists``, ``exists_one``, ``filter`` and ``map`` (two or three
      arguments). ``x in r`` walks ``r``: ``length(r)`` steps.
    * Lengths are exact for literals (``[1, 2, 3]`` has 3 elements, a string literal at
      most its length) and follow what builds values: ``a + b`` has ``length(a) +
      length(b)`` elements, ``map`` and ``filter`` the length of their range,
      ``flatten()`` the range's length times its elements' length, ``split()`` one more
      than the string's length, ``join()`` and ``replace()`` the longest output they can
      make. Building a value of known length costs its length (``[...] + [...]``).
    * Anything read from the request — a variable, its fields and elements, the result of
      ``provenance()`` — is assumed to have ``size`` elements, and so is everything nested
      in it: :data:`ASSUMED_SIZE` (100) against the ``expression_cost`` cap, and
      :func:`worst_size` (what the data caps allow) to decide whether an expression needs
      deadline checks. Only iterating over such a value (a comprehension, ``in``) is
      charged per element; comparing, copying or converting it is one step, so a rule's
      cost grows with the data only where it loops over it.
    * ``count()`` and ``provenance()`` cost :data:`CALL_COST` each (they run Python).

    Without tokens, or nested beyond what the estimator follows, the estimate is coarse:
    ``t * max(size, t) ** k`` for ``t`` tokens and ``k`` comprehensions.
    """
    if tokens is None:
        tokens = _tokenize(source)
    if tokens is not None:
        try:
            estimator = _Estimator(tokens, size)
            node = estimator.expression()
            if estimator.pos == len(tokens):
                return min(node.cost, _SATURATE)
        except (_UnanalysableError, RecursionError):
            pass
    count = len(tokens) if tokens is not None else len(source)
    macros = len(_MACRO_CALL.findall(source))
    coarse: int = count * max(size, count) ** macros
    return min(coarse, _SATURATE)


_MACRO_CALL = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(")


def _work(*nodes: _Node) -> int:
    """Steps to touch every element of the operands whose length is known."""
    return sum(n.length for n in nodes if not n.data)


class _Estimator:
    """A recursive-descent reading of CEL tokens that computes a :class:`_Node` bottom-up.

    It follows CEL's grammar (conditional, ``||``, ``&&``, relations, sums, products,
    unary operators, member chains, literals) but builds no tree; anything it does not
    recognise raises :class:`_UnanalysableError`.
    """

    def __init__(self, tokens: list[_Token], size: int) -> None:
        # (kind, text) of every token, then an end marker, so that peeking needs no test
        self.tokens = [t[:2] for t in tokens] + [("end", ""), ("end", "")]
        self.pos = 0
        self.request = _Node(1, size, size, True)
        self.scope: dict[str, _Node] = {}
        self.nesting = 0

    # tokens
    def _peek(self, ahead: int = 0) -> tuple[str, str]:
        return self.tokens[self.pos + ahead]

    def _take(self, text: str) -> bool:
        kind, found = self.tokens[self.pos]
        if found == text and kind == "op":
            self.pos += 1
            return True
        return False

    def _expect(self, text: str) -> None:
        if not self._take(text):
            raise _UnanalysableError(text)

    # grammar
    def expression(self) -> _Node:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise _UnanalysableError("nesting")
        node = self._binary()
        if self._take("?"):
            yes = self.expression()
            self._expect(":")
            no = self.expression()
            node = _Node(
                node.cost + yes.cost + no.cost + 1,
                max(yes.length, no.length),
                max(yes.inner, no.inner),
                yes.data or no.data,
            )
        self.nesting -= 1
        return node

    def _binary(self) -> _Node:
        operands = [self._unary()]
        operators: list[str] = []
        while True:
            kind, text = self._peek()
            if not ((kind == "op" or text == "in") and text in _PRECEDENCE):
                break
            self.pos += 1
            while operators and _PRECEDENCE[operators[-1]] >= _PRECEDENCE[text]:
                self._reduce(operands, operators)
            operators.append(text)
            operands.append(self._unary())
        while operators:
            self._reduce(operands, operators)
        return operands[0]

    @staticmethod
    def _reduce(operands: list[_Node], operators: list[str]) -> None:
        op = operators.pop()
        b, a = operands.pop(), operands.pop()
        cost = a.cost + b.cost + 1
        if op == "+":  # numbers, or concatenation: a new value of both lengths
            node = _Node(
                cost + _work(a, b), a.length + b.length, max(a.inner, b.inner), a.data or b.data
            )
        elif op == "in":
            node = _Node(cost + b.length, 1, 1, False)
        elif op in ("==", "!=", "<", "<=", ">", ">="):
            node = _Node(cost + (0 if a.data or b.data else min(a.length, b.length)), 1, 1, False)
        else:  # && || - * / %
            node = _Node(cost, 1, 1, False)
        operands.append(node)

    def _unary(self) -> _Node:
        signs = 0
        while self._peek() in (("op", "!"), ("op", "-")):
            self.pos += 1
            signs += 1
        node = self._member()
        return node if not signs else _Node(node.cost + signs, 1, 1, False)

    def _member(self) -> _Node:
        node = self._primary()
        while True:
            if self._take("."):
                kind, name = self._peek()
                if kind != "ident":
                    raise _UnanalysableError(".")
                self.pos += 1
                if self._take("("):
                    node = self._call(name, node)
                else:
                    node = _Node(node.cost + 1, node.inner, node.inner, node.data)
            elif self._take("["):
                index = self.expression()
                self._expect("]")
                node = _Node(node.cost + index.cost + 1, node.inner, node.inner, node.data)
            elif self._take("{"):
                node = self._entries("}", fields=True)
            else:
                return node

    def _primary(self) -> _Node:
        kind, text = self._peek()
        if (kind, text) == ("op", "."):  # a leading dot: .name is the name
            self.pos += 1
            kind, text = self._peek()
            if kind != "ident":
                raise _UnanalysableError(".")
        self.pos += 1
        if kind == "ident":
            if self._take("("):
                return self._call(text, None)
            if text in ("true", "false", "null"):
                return _SCALAR
            bound = self.scope.get(text)
            return bound if bound is not None else self.request
        if kind == "number":
            return _SCALAR
        if kind == "string":
            return _Node(1, max(1, len(text)), 1, False)
        if text == "(":
            node = self.expression()
            self._expect(")")
            return node
        if text == "[":
            return self._entries("]", fields=False)
        if text == "{":
            return self._entries("}", fields=False)
        raise _UnanalysableError(text)

    def _entries(self, close: str, *, fields: bool) -> _Node:
        """A list literal, or (``key: value`` entries) a map or message literal."""
        parts: list[_Node] = []
        is_map = close == "}"
        tokens = self.tokens
        while not self._take(close):
            kind, text = tokens[self.pos]
            if fields and kind == "ident":
                self.pos += 1  # a field name of a message literal
            elif kind in ("number", "string") and tokens[self.pos + 1][1] in (",", ":", close):
                self.pos += 1  # a literal entry: the common case of long lists, made quick
                parts.append(_SCALAR if kind == "number" else _Node(1, len(text), 1, False))
            else:
                parts.append(self.expression())
            if is_map:
                self._expect(":")
                parts.append(self.expression())
            if not self._take(","):
                self._expect(close)
                break
        count = len(parts) // 2 if is_map else len(parts)
        return _Node(
            1 + sum(p.cost for p in parts),
            max(1, count),
            max([1, *(p.length for p in parts), *(p.inner for p in parts)]),
            any(p.data for p in parts),
        )

    def _arguments(self) -> list[_Node]:
        args: list[_Node] = []
        while not self._take(")"):
            args.append(self.expression())
            if not self._take(","):
                self._expect(")")
                break
        return args

    def _call(self, name: str, receiver: _Node | None) -> _Node:
        """After ``name(`` (a method of ``receiver`` if given): the call's node."""
        if (
            receiver is not None
            and name in _MACROS
            and self._peek()[0] == "ident"
            and self._peek(1) == ("op", ",")
        ):
            return self._comprehension(name, receiver)
        args = self._arguments()
        return _call_node(name, receiver, args, self.request)

    def _comprehension(self, name: str, range_: _Node) -> _Node:
        variable = self._peek()[1]
        self.pos += 2
        shadowed = self.scope.get(variable)
        # the variable is an element (or, over a map, a key) of the range
        self.scope[variable] = _Node(1, range_.inner, range_.inner, range_.data)
        try:
            parts = self._arguments()
        finally:
            if shadowed is None:
                self.scope.pop(variable, None)
            else:
                self.scope[variable] = shadowed
        if not parts or len(parts) > 2 or (len(parts) == 2 and name != "map"):
            raise _UnanalysableError(name)
        body = sum(p.cost for p in parts)
        cost = range_.cost + 1 + range_.length * (body + 1)
        if name == "filter":
            return _Node(cost, range_.length, range_.inner, range_.data)
        if name == "map":
            value = parts[-1]
            return _Node(
                cost,
                range_.length,
                max(value.length, value.inner),
                range_.data or value.data,
            )
        return _Node(cost, 1, 1, False)


def _call_node(name: str, receiver: _Node | None, args: list[_Node], request: _Node) -> _Node:
    """The node of a call of ``name`` (a method of ``receiver`` if given; see
    :func:`estimate_cost`)."""
    operands = ([receiver] if receiver is not None else []) + args
    cost = 1 + sum(n.cost for n in operands)
    first = operands[0] if operands else _SCALAR
    data = any(n.data for n in operands)
    if name == "count":
        return _Node(cost + CALL_COST, 1, 1, False)
    if name == "provenance":
        return _Node(cost + CALL_COST + _work(first), request.length, request.inner, True)
    if name in ("lowerAscii", "upperAscii", "trim", "substring", "dyn"):
        return _Node(cost + 2 * _work(first), first.length, first.inner, first.data)
    if name in ("string", "bytes"):
        return _Node(cost + 2 * _work(first), first.length + 32, 1, first.data)
    if name == "split":
        return _Node(cost + 2 * _work(*operands), first.length + 1, first.length, data)
    if name == "join":
        separator = operands[1].length if len(operands) > 1 else 0
        out = first.length * (first.inner + separator)
        return _Node(cost + (0 if data else out), out, 1, data)
    if name == "replace":
        new = operands[2].length if len(operands) > 2 else 1
        out = (first.length + 1) * (new + 1)
        return _Node(cost + (0 if data else out), out, 1, data)
    if name == "flatten":
        out = first.length * first.inner
        return _Node(cost + (0 if data else out), out, first.inner, data)
    if name == "distinct":
        return _Node(cost + _work(first) ** 2, first.length, first.inner, first.data)
    if name in _MACROS:
        raise _UnanalysableError(name)  # a macro in a form the estimator does not follow
    if name in _SCALAR_RESULTS:
        return _Node(cost + _work(*operands), 1, 1, False)
    # anything else (an unknown function fails at run time): no larger than its operands
    return _Node(
        cost + _work(*operands),
        max([1, *(n.length for n in operands)]),
        max([1, *(n.inner for n in operands)]),
        data,
    )


_SCALAR_RESULTS = frozenset(
    {
        "size",
        "has",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "indexOf",
        "lastIndexOf",
        "charAt",
        "sum",
        "int",
        "uint",
        "double",
        "type",
        "timestamp",
        "duration",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    }
)


# -- deadline checks -------------------------------------------------------------------


def _instrument(source: str, tokens: list[_Token]) -> str | None:
    """``source`` with every comprehension body ``b`` as ``charter__tick() ? (b) : false``.

    ``charter__tick()`` is ``true`` until the deadline, so the result is the same program;
    after it, the call raises, which ends the comprehension on its next element. For
    ``map(x, p, v)`` the predicate ``p`` is wrapped (it runs for every element). ``None``
    when there is no comprehension to wrap.
    """
    inserts: list[tuple[int, int, str]] = []  # (offset, 0 for a close / 1 for an open, text)
    for i in range(len(tokens) - 4):
        if not (
            tokens[i][:2] == ("op", ".")
            and tokens[i + 1][0] == "ident"
            and tokens[i + 1][1] in _MACROS
            and tokens[i + 2][:2] == ("op", "(")
            and tokens[i + 3][0] == "ident"
            and tokens[i + 4][:2] == ("op", ",")
        ):
            continue
        commas: list[int] = []
        close = None
        for k, text, depth in _operators(tokens, i + 2, len(tokens)):
            if depth == 1 and text == ",":
                commas.append(k)
            elif depth == 0:
                close = k
                break
        if close is None or not 1 <= len(commas) <= 2:
            continue  # not a comprehension CEL would expand; nothing to wrap
        if len(commas) == 2 and tokens[i + 1][1] == "map":
            first, last = commas[0] + 1, commas[1] - 1
        else:
            first, last = commas[-1] + 1, close - 1
        if first > last:
            continue
        start = tokens[first][3]
        end = tokens[last][3] + len(tokens[last][1])
        inserts.append((start, 1, f"{TICK}() ? ("))
        inserts.append((end, 0, ") : false"))
    if not inserts:
        return None
    out: list[str] = []
    pos = 0
    for offset, _, text in sorted(inserts):
        out.append(source[pos:offset])
        out.append(text)
        pos = offset
    out.append(source[pos:])
    return "".join(out)
