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

import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import cel
from cel.stdlib import EXTENSIONS

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
    """

    source: str
    program: Any
    variables: frozenset[str]
    functions: frozenset[str]
    paths: frozenset[Path] | None = None
    guard: tuple[Path, str] | None = None
    unguarded: Any = None

    def evaluate(self, env: Environment) -> Any:
        try:
            return self.program.execute(env.context)
        except Exception as exc:
            raise CelEvalError(error_message(exc)) from None


def error_message(exc: Exception) -> str:
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
    """Compile ``source``; raise :class:`CelCompileError` with CEL's diagnostic if it fails."""
    try:
        program = cel.compile(source)
    except Exception as exc:
        message = str(exc)
        prefix = f"Failed to parse expression '{source}': "
        message = message.removeprefix(prefix)
        raise CelCompileError(message.strip()) from None
    refs = program.references()
    variables = frozenset(refs.get("variables", ()))
    tokens = _tokenize(source)
    paths = _variable_paths(tokens, variables) if tokens is not None else None
    guard = _guard(tokens) if paths is not None and tokens is not None else None
    unguarded = None
    if guard is not None:
        try:
            unguarded = cel.compile(source[guard[2] :])
        except Exception:
            guard = None  # cannot happen for a valid conjunction; then just no guard
    return Expression(
        source=source,
        program=program,
        variables=variables,
        functions=frozenset(refs.get("functions", ())),
        paths=paths,
        guard=guard[:2] if guard is not None else None,
        unguarded=unguarded,
    )


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
    kind a guard compares with), else ``None``. Gives up on raw strings that contain a
    backslash, whose end the lexer would have to guess.
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
        escape = source.find("\\", pos, close)
        if escape < 0:
            break
        if raw:
            return None
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
