"""What every layer of Charter shares: time as the ledger writes it, durations as contracts
write them, canonical JSON and its hashes, and code named by import path.

This is the bottom of the package: it imports nothing of Charter's but the error tree, so
any module may use it. Each helper exists once, here, because each is a format other
things depend on byte for byte — a time sorts as text in both stores, a digest binds an
approval, a content hash names a contract version.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from charter.errors import ConfigurationError

# -- time -------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """UTC, microseconds, ``Z``: sortable as text, which the stores rely on.

    The fields are written as they are (as ``strftime`` would); callers pass UTC times.
    ``isoformat`` is used because it is several times faster than ``strftime`` and this runs
    for every event.
    """
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def parse_time(text: str) -> datetime:
    """A time the ledger wrote (or any ISO 8601 instant) as an aware ``datetime``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_instant(text: str) -> datetime:
    """ISO 8601 with a timezone; ``Z`` accepted. Naive times are rejected, not guessed."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone; add Z or an offset such as +02:00")
    return value.astimezone(UTC)


# -- durations --------------------------------------------------------------------------
# Contracts are read by people; a compact unit syntax (``250ms``, ``30s``, ``5m``, ``4h``,
# ``1d``, ``1h30m``) is easier to review than ISO 8601 (``PT1H30M``), and it is the syntax
# CEL's ``duration()`` accepts for h/m/s/ms.

#: The syntax of a duration, also published in the contract JSON Schema.
DURATION_PATTERN = r"^(?:\d+(?:ms|s|m|h|d))+$"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``1h30m``; raise ``ValueError`` naming the accepted units."""
    cleaned = text.strip()
    if not _DURATION.match(cleaned):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m"
        )
    total = timedelta()
    for amount, unit in _DURATION_PART.findall(cleaned):
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


# -- canonical JSON and hashes ----------------------------------------------------------


def canonical(data: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is.

    ``NaN`` and ``Infinity`` raise :class:`ValueError`: they are not JSON (see
    :mod:`charter.jsontext`), and a payload another reader cannot parse must never be hashed.
    """
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_text(text: str) -> str:
    """SHA-256 of UTF-8 text, as hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest(data: Any) -> str:
    """SHA-256 of the canonical JSON of ``data``: formatting and key order do not matter.

    Names a contract's content, binds a review to the exact action it approves, and
    tells two submissions under one idempotency key apart.
    """
    return sha256_text(canonical(data))


# -- code named by import path ----------------------------------------------------------

#: ``package.module:function``, as contracts name executors, readers and model scripts
#: (also published in the contract JSON Schema).
IMPORT_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"

#: Directories (``os.pathsep``-separated) where code named by contracts is found, besides
#: installed packages. Appended to ``sys.path``, never ahead of the standard library and
#: installed packages, and never implicitly the working directory.
IMPORT_PATH_ENV = "CHARTER_IMPORT_PATH"
#: Comma-separated import-path prefixes (``acme.ops.,examples.``) that contracts may name;
#: unset, any module but the standard library's.
PREFIXES_ENV = "CHARTER_EXECUTOR_PREFIXES"

_callables: dict[str, Callable[..., Any]] = {}


def import_path_problem(path: str) -> str | None:
    """Why a contract may not name ``path`` as code to run here, or ``None``.

    Contracts and policy packs are code: whoever can register one can make workers import
    and call what it names. So a name from the standard library (``os:system``,
    ``builtins:eval``, ``subprocess:run``) or a dunder attribute is never accepted, and a
    deployment narrows what is with :data:`PREFIXES_ENV` (docs/security.md).
    """
    module_name, _, attr = path.partition(":")
    top = module_name.split(".")[0]
    prefixes = [p.strip() for p in os.environ.get(PREFIXES_ENV, "").split(",") if p.strip()]
    if prefixes:
        if not any(path.startswith(p) for p in prefixes):
            return (
                f"{path!r} is outside the import prefixes this deployment allows "
                f"({PREFIXES_ENV}={','.join(prefixes)})"
            )
    elif top in sys.stdlib_module_names or top == "builtins":
        return (
            f"{path!r} names the standard library ({top}); contracts may only name your own "
            f"code (list what is allowed in {PREFIXES_ENV})"
        )
    if attr.startswith("__"):
        return f"{path!r} names a dunder attribute, which contracts may not call"
    return None


def _extend_import_path() -> None:
    for entry in os.environ.get(IMPORT_PATH_ENV, "").split(os.pathsep):
        folder = str(Path(entry).resolve()) if entry else ""
        if folder and folder not in sys.path:
            sys.path.append(folder)


def import_callable(path: str, what: str = "executor") -> Callable[..., Any]:
    """Import ``package.module:function``; :class:`ConfigurationError` says which part is
    wrong, or that the deployment does not allow it (contracts name executors, readers and
    model scripts this way; see :func:`import_path_problem`)."""
    found = _callables.get(path)
    if found is not None:
        return found
    problem = import_path_problem(path)
    if problem is not None:
        raise ConfigurationError(f"{what}: {problem}")
    _extend_import_path()
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} {path!r}: cannot import module {module_name!r} ({exc}); "
            "is it installed or on PYTHONPATH (run from the project root)?"
        ) from None
    func: Callable[..., Any] | None = getattr(module, attr, None)
    if func is None or not callable(func):
        raise ConfigurationError(
            f"{what} {path!r}: module {module_name!r} has no callable {attr!r}"
        )
    _callables[path] = func
    return func
