"""JSON Schema ``format`` is enforced: the schema of an input or an action means what it says.

JSON Schema treats ``format`` as an annotation unless a validator is given a format checker,
so ``format: email`` accepted any string, and a per-recipient rule could be fed anything.
Every schema a contract declares (``input``, ``actions.*.args``) is checked with
:data:`FORMAT_CHECKER`: jsonschema's checkers for the 2020-12 formats (the
``format-nongpl`` extra supplies date-time, uri, hostname and the rest) with ``email`` made
as strict as the WHATWG HTML definition of a valid e-mail address (jsonschema's own only
asks for an ``@``). A format no checker knows is a contract error at load time, never a
silently unchecked field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

#: https://html.spec.whatwg.org/multipage/input.html#valid-e-mail-address
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)
#: The same shape with any letter or digit of any script (``idn-email``).
_IDN_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@\w(?:[\w-]{0,61}\w)?(?:\.\w(?:[\w-]{0,61}\w)?)*")

FORMAT_CHECKER = FormatChecker()
for _name, _func in Draft202012Validator.FORMAT_CHECKER.checkers.items():
    FORMAT_CHECKER.checkers[_name] = _func


@FORMAT_CHECKER.checks("email")
def _is_email(value: object) -> bool:
    return not isinstance(value, str) or _EMAIL.fullmatch(value) is not None


@FORMAT_CHECKER.checks("idn-email")
def _is_idn_email(value: object) -> bool:
    return not isinstance(value, str) or _IDN_EMAIL.fullmatch(value) is not None


KNOWN_FORMATS = frozenset(FORMAT_CHECKER.checkers)

#: Keywords whose value maps names to subschemas (a ``format`` key there is a name).
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A 2020-12 validator of ``schema`` that enforces ``format``."""
    return Draft202012Validator(schema, format_checker=FORMAT_CHECKER)


def unknown_formats(
    schema: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, format) of every ``format`` in ``schema`` that no checker enforces."""
    if isinstance(schema, Mapping):
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt not in KNOWN_FORMATS:
            yield (*path, "format"), fmt
        for key, value in schema.items():
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                for name, sub in value.items():
                    yield from unknown_formats(sub, (*path, key, name))
            elif key != "format" and key not in ("enum", "const", "default", "examples"):
                yield from unknown_formats(value, (*path, key))
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from unknown_formats(item, (*path, i))
