"""Durations as contracts write them: ``250ms``, ``30s``, ``5m``, ``4h``, ``1d``, ``1h30m``.

Contracts are read by people; a compact unit syntax is easier to review than ISO 8601
(``PT1H30M``), and it is the same syntax CEL's ``duration()`` accepts for h/m/s/ms.
"""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:ms|s|m|h|d))+$")
_UNIT = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}

DURATION_PATTERN = r"^(?:\d+(?:ms|s|m|h|d))+$"


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``1h30m``; raise ``ValueError`` naming the accepted units."""
    cleaned = text.strip()
    if not _WHOLE.match(cleaned):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m"
        )
    total = timedelta()
    for amount, unit in _PART.findall(cleaned):
        total += int(amount) * _UNIT[unit]
    return total


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the same compact syntax (largest units first)."""
    ms = int(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, ms = divmod(ms, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
