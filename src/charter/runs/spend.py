"""Spend limits per contract over calendar windows, checked before every model call.

A contract may cap what all its runs together spend on models per UTC day
(``budget.max_spend_per_day_usd``) and per UTC month (``budget.max_spend_per_month_usd``).
Before a call, the spend recorded in the window (the store's indexed ``model_calls``
projection, all versions of the contract by name) plus the call's reserved cost must fit;
otherwise the call is not made, the run records ``BudgetExceeded`` and escalates.

The check and the call are not one transaction: workers running the same contract at the
same moment may each pass it, so a window can be overshot by at most one reserved call per
concurrently running run (documented in docs/models.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from charter.ledger.store import Store

WINDOWS = (("max_spend_per_day_usd", "day"), ("max_spend_per_month_usd", "month"))


def window(kind: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar ``day`` or ``month`` containing ``now``, as [start, end)."""
    now = now.astimezone(UTC)
    if kind == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def spend_checks(
    store: Store, contract_name: str, budget: Mapping[str, Any], now: datetime, requested: float
) -> list[tuple[str, Any, Any, Any]]:
    """``(limit, allowed, used, requested)`` for each window limit the budget sets."""
    checks: list[tuple[str, Any, Any, Any]] = []
    for key, kind in WINDOWS:
        if key in budget:
            start, end = window(kind, now)
            used = round(store.spend(contract_name, _iso(start), _iso(end)), 10)
            checks.append((key, budget[key], used, requested))
    return checks


def window_spend(
    store: Store, contract_name: str, budget: Mapping[str, Any], now: datetime
) -> dict[str, dict[str, Any]]:
    """Spend so far in the current day and month, with the limits if set (for reports)."""
    out: dict[str, dict[str, Any]] = {}
    for key, kind in WINDOWS:
        start, end = window(kind, now)
        out[kind] = {
            "since": _iso(start),
            "spent_usd": round(store.spend(contract_name, _iso(start), _iso(end)), 6),
            "limit_usd": budget.get(key),
        }
    return out
