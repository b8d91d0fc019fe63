"""Which parts of the variables an expression can read, and its leading guard.

Converting Python values to CEL values is the expensive part of a decision (about 2 µs per
string, map or list), so compiling an expression records, from its tokens, the static field
paths through which it can read the variables (:func:`variable_paths`) and its leading
``path == "literal"`` test (:func:`leading_guard`); the engine converts only those parts
(:func:`shape_of`, :func:`prune`) and skips rules whose guard cannot match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from charter.policy.lexer import CLOSE, Token, operators

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

# -- static analysis of an expression's tokens -----------------------------------------
#
# The analysis is deliberately lexical and conservative: anything it does not fully
# understand makes it give up (``None``), and the engine then converts whole variables,
# exactly as if there were no analysis. It only has to find every place where a variable
# name occurs and which field names follow it; it never needs the expression's structure
# beyond paren depth.


def variable_paths(tokens: list[Token], referenced: frozenset[str]) -> frozenset[Path] | None:
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


def _uses(tokens: list[Token], start: int, end: int, name: str) -> set[Path] | None:
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


def _comprehension(tokens: list[Token], open_: int, end: int) -> tuple[str, int] | None:
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
    for k, text, depth in operators(tokens, open_, end):
        if depth == 0 and text in CLOSE:
            return var[1], k
    return None


def leading_guard(tokens: list[Token]) -> tuple[Path, str, int] | None:
    """The leading ``a.b == "literal" &&`` of a top-level conjunction, if there is one.

    Without ``||`` or ``?`` outside brackets, an expression is a chain of ``&&`` whose
    operands bind tighter, so the tokens before the first ``&&`` are its first operand,
    and the source from the token after it is the conjunction of the others. Returns the
    path, the literal and where that rest starts.
    """
    for _, text, depth in operators(tokens, 0, len(tokens)):
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
