"""Operational limits that hold across every worker sharing a ledger.

Two kinds, both configured on the workers (``charter worker --max-per-contract NAME=N
--rate-limit PROVIDER=N/min``), not in contracts: they protect capacity (a downstream
system, a model provider's quota), which operators tune without publishing a new contract
version, and which has no bearing on what a run may do. The *state* they are checked
against lives in the ledger, so they hold across processes and machines:

* **runs per contract** — at most N runs of a contract hold a live lease at once; a worker
  claiming work skips a contract at its cap (the store counts live leases and takes one
  more atomically: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL);
* **calls per provider** — at most N model calls to a provider in any sliding window; a
  worker about to call the model takes a slot first and waits (keeping its lease, honouring
  ``stop()``) while the window is full.

Give every worker the same limits: a worker started without them does not observe them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from charter.errors import UsageError

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d*)\s*([a-z]+))?\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most ``calls`` in any window of ``window``."""

    calls: int
    window: timedelta

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``30`` or ``30/min`` (per minute), ``5/s``, ``1000/h``, ``10/30s``."""
        m = _RATE.match(text.lower())
        if not m or m.group(3) not in (None, *_UNITS):
            raise UsageError(f"rate limit must look like 30/min, 5/s or 1000/h, got {text!r}")
        calls = int(m.group(1))
        if calls < 1:
            raise UsageError(f"a rate limit allows at least one call, got {text!r}")
        seconds = _UNITS[m.group(3) or "min"] * int(m.group(2) or 1)
        return cls(calls, timedelta(seconds=seconds))

    def __str__(self) -> str:
        return f"{self.calls}/{self.window.total_seconds():g}s"


@dataclass(frozen=True)
class Limits:
    """Runs in flight per contract name, and model calls per provider and window."""

    max_per_contract: Mapping[str, int] = field(default_factory=dict)
    rates: Mapping[str, RateLimit] = field(default_factory=dict)

    @classmethod
    def parse(cls, per_contract: Iterable[str] = (), rates: Iterable[str] = ()) -> Limits:
        """From CLI values: ``NAME=N`` and ``PROVIDER=N/min``."""
        caps: dict[str, int] = {}
        for item in per_contract:
            name, _, value = item.partition("=")
            if not name or not value.strip().isdigit() or int(value) < 1:
                raise UsageError(f"--max-per-contract takes NAME=N with N >= 1, got {item!r}")
            caps[name.strip()] = int(value)
        limits: dict[str, RateLimit] = {}
        for item in rates:
            name, _, value = item.partition("=")
            if not name or not value:
                raise UsageError(f"--rate-limit takes PROVIDER=N/min, got {item!r}")
            limits[name.strip()] = RateLimit.parse(value)
        return cls(caps, limits)

    def __bool__(self) -> bool:
        return bool(self.max_per_contract or self.rates)
