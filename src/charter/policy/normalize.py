"""How ``count()`` compares arguments: normalised values, so letter case is not a loophole.

A per-recipient rate rule (``count("send_email", {"to": action.args.to}, duration("1h"))``)
compared arguments exactly, so ``ANN@EXAMPLE.COM`` escaped the limit that ``ann@example.com``
had reached. Arguments whose JSON Schema ``format`` identifies something case-insensitive,
or whose action declares a normaliser (``normalize: {to: email}``), are compared in a
normalised form instead:

``casefold``
    Folded (:func:`fold`: NFKC, invisible format characters removed, digits of any script as
    ASCII, case-folded), trimmed, inner whitespace collapsed to one space.
``email``
    Folded and trimmed (the whole address: mail systems treat it so in practice).
``identifier``
    Folded, with every character that is not a letter or digit removed (:func:`skeleton`):
    IBANs, card numbers, order references written with any separators.
``exact``
    As written (turns off a normaliser a ``format`` would imply).

Formats ``email`` and ``idn-email`` imply ``email``; ``hostname`` and ``idn-hostname`` imply
``casefold``. Only top-level arguments are normalised (``count()`` matches top-level keys);
strings inside a list are normalised one by one. The executor always receives the arguments
exactly as proposed: normal forms exist only for matching.

:func:`fold` and :func:`skeleton` are also the normal forms ``provenance()`` compares in
(:mod:`charter.policy.provenance`): one definition of "the same text" for all of policy.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

KINDS = ("exact", "casefold", "email", "identifier")

#: The normaliser a JSON Schema ``format`` implies.
FORMAT_KINDS = {
    "email": "email",
    "idn-email": "email",
    "hostname": "casefold",
    "idn-hostname": "casefold",
}


class _CharFolds(dict[int, "str | None"]):
    """``str.translate`` table, filled on first sight of a character: format characters
    (``Cf``) are deleted, decimal digits of any script become ASCII digits."""

    def __missing__(self, code: int) -> str | None:
        char = chr(code)
        category = unicodedata.category(char)
        out: str | None
        if category == "Cf":
            out = None
        elif category == "Nd":
            out = str(unicodedata.decimal(char))
        else:
            out = char
        if len(self) < 65536:  # bounded: a hostile text cannot grow it without end
            self[code] = out
        return out


_FOLDS = _CharFolds()


def fold(text: str) -> str:
    """The folded form of ``text``: NFKC, format characters removed, digits to ASCII,
    case-folded. ASCII text (which has no compatibility forms and no ``Cf`` characters)
    is only case-folded."""
    if text.isascii():
        return text.casefold()
    text = unicodedata.normalize("NFKC", text).translate(_FOLDS).casefold()
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


#: A run of separators: anything that is not a letter or a digit.
SEPARATORS = re.compile(r"[\W_]+")


def skeleton(folded: str) -> str:
    """Letters and digits only: the form in which separators inside a token are ignored."""
    return SEPARATORS.sub("", folded)


def _fold(text: str) -> str:
    return fold(text).strip()


def normalise(kind: str, value: Any) -> Any:
    """``value`` in the normal form ``kind`` names; non-strings are returned unchanged."""
    if isinstance(value, list):
        return [normalise(kind, v) for v in value]
    if not isinstance(value, str) or kind == "exact":
        return value
    if kind == "email":
        return _fold(value)
    if kind == "casefold":
        return " ".join(_fold(value).split())
    if kind == "identifier":
        return skeleton(fold(value))
    raise ValueError(f"unknown normaliser {kind!r}; use one of {', '.join(KINDS)}")


def normalizers(args_schema: Mapping[str, Any], declared: Mapping[str, str]) -> dict[str, str]:
    """Argument name → normaliser: implied by each property's ``format``, then as declared."""
    found: dict[str, str] = {}
    props = args_schema.get("properties")
    if isinstance(props, Mapping):
        for name, prop in props.items():
            fmt = prop.get("format") if isinstance(prop, Mapping) else None
            if isinstance(fmt, str) and fmt in FORMAT_KINDS:
                found[str(name)] = FORMAT_KINDS[fmt]
    found.update(declared)
    return {k: v for k, v in found.items() if v != "exact"}


def match_form(kinds: Mapping[str, str], args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with every argument that has a normaliser in its normal form."""
    if not kinds:
        return dict(args)
    return {k: normalise(kinds[k], v) if k in kinds else v for k, v in args.items()}
