"""What one expression may cost: a static estimate at load, a deadline while it runs.

One rule must not be able to stall every decision of its contract (docs/policy.md,
"Limits").
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from charter.caps import CAPS
from charter.policy.lexer import CLOSE, Token, operators, tokenize

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
#   comprehension body (:func:`instrument`), and the engine reads the clock between
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


def chained_operators(tokens: list[Token] | None, source: str) -> int:
    """Operators that can build a left-deep tree: ``.``, ``[``, and binary arithmetic and
    comparisons (``&&`` and ``||`` chains, unary ``!`` and ``-`` are parsed without deep
    recursion). Counted over the whole expression, which over-approximates the deepest
    chain; without tokens, every such character counts."""
    if tokens is None:
        return len(_OPERATOR_CHARS.findall(source))
    count = 0
    previous: Token | None = None
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


def _ends_operand(token: Token) -> bool:
    kind, text = token[:2]
    return kind in ("ident", "number", "string") or text in CLOSE


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


def estimate_cost(source: str, tokens: list[Token] | None = None, size: int = ASSUMED_SIZE) -> int:
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
        tokens = tokenize(source)
    if tokens is not None:
        try:
            estimator = _Estimator(tokens, size)
            node = estimator.expression()
            if estimator.pos == len(tokens):
                return min(node.cost, _SATURATE)
        except (_UnanalysableError, RecursionError):
            pass
    count = len(tokens) if tokens is not None else len(source)
    macros = len(MACRO_CALL.findall(source))
    coarse: int = count * max(size, count) ** macros
    return min(coarse, _SATURATE)


MACRO_CALL = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(")


def _work(*nodes: _Node) -> int:
    """Steps to touch every element of the operands whose length is known."""
    return sum(n.length for n in nodes if not n.data)


class _Estimator:
    """A recursive-descent reading of CEL tokens that computes a :class:`_Node` bottom-up.

    It follows CEL's grammar (conditional, ``||``, ``&&``, relations, sums, products,
    unary operators, member chains, literals) but builds no tree; anything it does not
    recognise raises :class:`_UnanalysableError`.
    """

    def __init__(self, tokens: list[Token], size: int) -> None:
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


def instrument(source: str, tokens: list[Token]) -> str | None:
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
        for k, text, depth in operators(tokens, i + 2, len(tokens)):
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
