"""What may enter the ledger: JSON values that every store can hold and hash the same way.

The ledger is append-only and hash-chained, so a value that cannot be written must be
refused *before* anything happens because of it: an executor must never run on arguments
whose completion cannot then be recorded. Python happily holds values that are not JSON
text, and each one broke a real path:

* ``NaN`` and ``Infinity`` — Python's ``json`` reads and writes them, but they are not JSON
  (RFC 8259), other languages reject them, and PostgreSQL's ``jsonb`` refuses them;
* lone surrogates (``"\\ud800"``, produced by a JSON escape) — not Unicode text: they cannot
  be encoded as UTF-8, so they cannot be hashed or stored;
* the NUL character — valid JSON, but PostgreSQL text and ``jsonb`` cannot hold it, so the
  two stores would disagree about the same run;
* anything else (dates, bytes, objects) and nesting deeper than the ``json_depth`` cap
  (:mod:`charter.caps`).

Boundaries (task input, proposed and edited arguments, reviewers' text) *reject* such
values with a message naming the field, through :func:`problems` and :func:`loads`. Data
that arrives after the fact — an executor's result once its effect has happened, a model's
raw output whose call has been paid for — is never dropped: :func:`sanitised` turns it into
the closest recordable value and says what it changed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from charter.caps import CAPS

_REPLACEMENT = "\ufffd"
_NUL = "contains the NUL character (U+0000), which the ledger cannot store"


def _text_problem(text: str) -> str | None:
    if text.isascii():  # the usual case: no surrogates possible, one scan for NUL
        return None if "\x00" not in text else _NUL
    if "\x00" in text:
        return _NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(text[exc.start])
        return (
            f"contains a lone surrogate (U+{bad:04X}), which is not valid Unicode text; "
            "send UTF-8 text (a JSON escape like \\ud800 must be part of a surrogate pair)"
        )
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def problems(value: Any, where: str) -> list[str]:
    """Why ``value`` cannot be recorded, one message per offending field (empty if it can).

    Walks the value iteratively, so a hostile nesting depth cannot exhaust the stack.
    """
    found: list[str] = []
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, str):
            problem = _text_problem(node)
            if problem:
                found.append(f"{path}: {problem}")
        elif node is None or isinstance(node, bool | int):
            continue
        elif isinstance(node, float):
            if not math.isfinite(node):
                found.append(f"{path}: {node!r} is not a JSON number; send a finite number or null")
        elif isinstance(node, dict | list | tuple):
            if depth >= CAPS["json_depth"].limit:
                found.append(CAPS["json_depth"].exceeded(depth + 1, path))
                continue
            if isinstance(node, dict):
                items: list[tuple[str | int, Any]] = []
                for k, v in node.items():
                    if not isinstance(k, str):
                        found.append(f"{path}: key {k!r} is not a string")
                        continue
                    problem = _text_problem(k)
                    if problem:
                        found.append(f"{path}: a key {problem}")
                        continue
                    items.append((k, v))
            else:
                items = list(enumerate(node))
            for k, v in reversed(items):
                stack.append((_join(path, k), v, depth + 1))
        else:
            found.append(f"{path}: a {type(node).__name__} is not a JSON value")
    return found


def text_problem(text: str, where: str) -> str | None:
    """Why one piece of free text (a comment, a name) cannot be recorded, or ``None``."""
    problem = _text_problem(text)
    return f"{where}: {problem}" if problem else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value; use a finite number or null")


def loads(text: str | bytes) -> Any:
    """Strict JSON: like :func:`json.loads` but ``NaN``/``Infinity`` are errors, not floats.

    Raises :class:`json.JSONDecodeError` or :class:`ValueError`; callers turn either into
    their own located message.
    """
    return json.loads(text, parse_constant=_reject_constant)


def sanitised(value: Any) -> tuple[Any, list[str]]:
    """The closest recordable value to ``value`` and what had to change to get it.

    Lone surrogates and NUL become U+FFFD, non-finite numbers ``null``, other objects their
    ``str()``, keys strings; nesting beyond the ``json_depth`` cap is cut off as a string. Used
    only for data that must be kept although it is malformed (see the module docstring).
    """
    changes: list[str] = []

    def fix(node: Any, path: str, depth: int) -> Any:
        if isinstance(node, str):
            return fix_text(node, path)
        if node is None or isinstance(node, bool | int):
            return node
        if isinstance(node, float):
            if math.isfinite(node):
                return node
            changes.append(f"{path}: {node!r} recorded as null")
            return None
        if isinstance(node, dict | list | tuple):
            if depth >= CAPS["json_depth"].limit:
                changes.append(f"{path}: {CAPS['json_depth'].exceeded(depth + 1)}, cut off")
                return fix_text(repr(node)[:200], path)
            if isinstance(node, dict):
                return {
                    fix_text(str(k), path): fix(v, _join(path, str(k)), depth + 1)
                    for k, v in node.items()
                }
            return [fix(v, _join(path, i), depth + 1) for i, v in enumerate(node)]
        changes.append(f"{path}: a {type(node).__name__} recorded as text")
        return fix_text(str(node), path)

    def fix_text(text: str, path: str) -> str:
        if _text_problem(text) is None:
            return text
        changes.append(f"{path}: invalid text (NUL or lone surrogates) replaced by U+FFFD")
        return sanitised_text(text)

    return fix(value, "$", 0), changes


def sanitised_text(text: str) -> str:
    """Free text made recordable: NUL and lone surrogates replaced by U+FFFD."""
    if _text_problem(text) is None:
        return text
    return "".join(_REPLACEMENT if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def utf8_size(text: str) -> int:
    """The size of ``text`` in UTF-8 bytes (a lone surrogate counts its 3 bytes)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def json_size(value: Any) -> int:
    """The size in bytes of ``value`` as compact UTF-8 JSON (``value`` must be recordable)."""
    return utf8_size(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def json_nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest, without parsing it.

    For the message when :func:`json.loads` gave up with ``RecursionError`` (it recurses
    once per level, so a text nested a thousand levels deep exhausts the stack): strings are
    skipped, brackets counted, iteratively. Malformed text gets a best-effort count.
    """
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def too_deep(text: str, where: str) -> str:
    """The ``json_depth`` message for ``text`` that :func:`json.loads` could not nest into."""
    cap = CAPS["json_depth"]
    return cap.exceeded(max(json_nesting_depth(text), cap.limit + 1), where)
