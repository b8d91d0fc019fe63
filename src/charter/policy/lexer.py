"""CEL source as tokens: the lexer behind Charter's static analysis of expressions.

Lexical and conservative: a source it does not fully understand gives ``None``, and every
analysis built on it (the fields an expression reads, its cost) then falls back to the
safe answer. It never needs more of the grammar than bracket depth.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TypeAlias

#: (kind, text, decoded value of a plain string literal, offset in the source)
Token: TypeAlias = tuple[str, str, str | None, int]

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


def tokenize(source: str) -> list[Token] | None:
    """CEL tokens without spaces and comments; ``None`` for anything unexpected."""
    tokens: list[Token] = []
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


OPEN = frozenset("([{")
CLOSE = frozenset(")]}")


def operators(tokens: list[Token], start: int, end: int) -> Iterator[tuple[int, str, int]]:
    """``(index, text, bracket depth after it)`` of each operator token in [start, end)."""
    depth = 0
    for k in range(start, end):
        kind, text = tokens[k][:2]
        if kind != "op":
            continue
        if text in OPEN:
            depth += 1
        elif text in CLOSE:
            depth -= 1
        yield k, text, depth
