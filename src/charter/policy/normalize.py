"""How ``count()`` compares arguments: normalised values, so letter case is not a loophole.

A per-recipient rate rule (``count("send_email", {"to": action.args.to}, duration("1h"))``)
compared arguments exactly, so ``ANN@EXAMPLE.COM`` escaped the limit that ``ann@example.com``
had reached. Arguments whose JSON Schema ``format`` identifies something case-insensitive,
or whose action declares a normaliser (``normalize: {to: email}``), are compared in a
normalised form instead:

``casefold``
    Unicode NFKC, trimmed, case-folded, inner whitespace collapsed to one space.
``email``
    NFKC, trimmed, case-folded (the whole address: mail systems treat it so in practice).
``identifier``
    NFKC, case-folded, with every character that is not a letter or digit removed: IBANs,
    card numbers, order references written with any separators.
``exact``
    As written (turns off a normaliser a ``format`` would imply).

Formats ``email`` and ``idn-email`` imply ``email``; ``hostname`` and ``idn-hostname`` imply
``casefold``. Only top-level arguments are normalised (``count()`` matches top-level keys);
strings inside a list are normalised one by one. The executor always receives the arguments
exactly as proposed: normal forms exist only for matching.
"""

from __future__ import annotations

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


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


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
        return "".join(c for c in _fold(value) if c.isalnum())
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
