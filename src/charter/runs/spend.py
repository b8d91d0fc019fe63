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

from datetime import UTC, datetime, timedelta
from typing import Any

from charter.contract.sections import Budget
from charter.ledger.store import Store
from charter.primitives import format_time

#: The calendar windows a budget may limit, with the budget key that limits each.
WINDOWS = {"day": "max_spend_per_day_usd", "month": "max_spend_per_month_usd"}


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


def spend_checks(
    store: Store, contract_name: str, budget: Budget, now: datetime, requested: float
) -> list[tuple[str, Any, Any, Any]]:
    """``(limit, allowed, used, requested)`` for each window limit the budget sets."""
    checks: list[tuple[str, Any, Any, Any]] = []
    for kind, allowed in budget.spend_limits.items():
        start, end = window(kind, now)
        used = round(store.spend(contract_name, format_time(start), format_time(end)), 10)
        checks.append((WINDOWS[kind], allowed, used, requested))
    return checks


def window_spend(
    store: Store, contract_name: str, budget: Budget, now: datetime
) -> dict[str, dict[str, Any]]:
    """Spend so far in the current day and month, with the limits if set (for reports)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in WINDOWS:
        start, end = window(kind, now)
        out[kind] = {
            "since": format_time(start),
            "spent_usd": round(store.spend(contract_name, format_time(start), format_time(end)), 6),
            "limit_usd": budget.spend_limits.get(kind),
        }
    return out
