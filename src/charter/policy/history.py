"""What policy may ask about the past: how many times was an action executed recently?

Rate rules (``count("send_email", {"to": action.args.to}, duration("1h")) >= 3``) need a
view of executed actions. Policy stays a pure function of its inputs by receiving that
view as a :class:`HistoryProvider`; the in-memory provider serves tests and ``policy eval``,
the ledger provides the same interface for real runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from charter.policy.normalize import match_form


@runtime_checkable
class HistoryProvider(Protocol):
    """Counts executed actions named ``action`` whose args contain ``match``, in [since, until]."""

    def count(
        self, action: str, match: Mapping[str, Any], since: datetime, until: datetime
    ) -> int: ...


def args_match(args: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    """True when every key of ``match`` is in ``args`` with an equal value."""
    return all(k in args and args[k] == v for k, v in match.items())


@dataclass(frozen=True)
class ExecutedAction:
    action: str
    args: Mapping[str, Any]
    at: datetime


class InMemoryHistory:
    """A list of executed actions; fine for tests, policy files and single decisions.

    ``normalize`` (action → argument → normaliser, e.g. ``Contract.normalizers``) puts the
    recorded arguments in the normal form ``count()`` asks in, as the ledger's projection
    of executed actions does; see :mod:`charter.policy.normalize`.
    """

    def __init__(
        self,
        executed: list[ExecutedAction] | None = None,
        *,
        normalize: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._executed: list[ExecutedAction] = list(executed or [])
        self._normalize = dict(normalize or {})

    def record(self, action: str, args: Mapping[str, Any], at: datetime) -> None:
        self._executed.append(ExecutedAction(action, dict(args), at))

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        kinds = self._normalize.get(action) or {}
        return sum(
            1
            for e in self._executed
            if e.action == action
            and since <= e.at <= until
            and args_match(match_form(kinds, e.args), match)
        )


class NoHistory:
    """History for callers that have none: every count is zero."""

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        return 0
