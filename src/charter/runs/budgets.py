"""Budgets: what a run may still spend, checked before it spends it.

Model limits (``max_model_calls``, ``max_tokens``, ``max_cost_usd``, the contract's spend
per day and month) are checked before each call against the provider's estimate — the
*reserve*: the prompt uncached and the whole output cap at the dearest rate — and settled
afterwards with the usage recorded in ``model.called``. ``max_actions`` is checked before
each action. Exceeding a limit records ``budget.exceeded`` and escalates the run to the
contract's reviewers; the call or action is not made.

Rate limits (``charter worker --rate-limit openai=500/min``) are not budgets of a run but of
a provider across every worker; :func:`wait_for_rate_slot` takes a slot of the shared
window before a call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from charter.contract.model import Contract
from charter.ledger.events import BudgetExceeded, Event, RunEscalated
from charter.ledger.store import Store
from charter.models.base import Usage
from charter.primitives import format_time, parse_time
from charter.runs.limits import Limits
from charter.runs.spend import spend_checks
from charter.runs.state import RunState

#: ``(limit, allowed, used, requested)``: one budget a step asks to use
Check = tuple[str, Any, Any, Any]


def exceeded(contract: Contract, check: Check) -> list[Event]:
    """The events of a budget exceeded: recorded, and the run escalated to people."""
    limit, allowed, used, requested = check
    return [
        BudgetExceeded(limit, float(allowed), float(used), float(requested)),
        RunEscalated(
            f"budget {limit} exceeded ({used} used + {requested} requested > {allowed})",
            list(contract.escalation.reviewers),
        ),
    ]


def model_call_checks(
    contract: Contract, state: RunState, estimate: Usage, reserve: float
) -> list[Check]:
    """The run's own model limits for one more call of ``estimate`` costing ``reserve``."""
    budget = contract.budget
    checks: list[Check] = [("max_model_calls", budget.max_model_calls, state.model_calls, 1)]
    if budget.max_tokens is not None:
        checks.append(("max_tokens", budget.max_tokens, state.tokens, estimate.tokens))
    if budget.max_cost_usd is not None:
        checks.append(("max_cost_usd", budget.max_cost_usd, state.cost_usd, reserve))
    return checks


def window_checks(store: Store, contract: Contract, now: datetime, reserve: float) -> list[Check]:
    """The contract's spend windows (all its runs) for one more call costing ``reserve``."""
    return spend_checks(store, contract.name, contract.budget, now, reserve)


def over(checks: list[Check]) -> Check | None:
    """The first check that would exceed its limit, if any."""
    for check in checks:
        _, allowed, used, requested = check
        if used + requested > allowed:
            return check
    return None


def action_check(contract: Contract, state: RunState) -> Check | None:
    """``max_actions`` for one more action, if the contract limits actions."""
    limit = contract.budget.max_actions
    if limit is None:
        return None
    return over([("max_actions", limit, len(state.executed), 1)])


def wait_for_rate_slot(
    store: Store,
    limits: Limits,
    provider: str,
    clock: Callable[[], datetime],
    stop: threading.Event,
) -> bool:
    """Wait for a slot of ``provider``'s rate limit; ``False`` if stopped meanwhile."""
    limit = limits.rates.get(provider)
    if limit is None:
        return True
    while not stop.is_set():
        now = clock()
        oldest = store.acquire_rate_slot(
            f"provider:{provider}", limit.calls, format_time(now), format_time(now - limit.window)
        )
        if oldest is None:
            return True
        wait = (parse_time(oldest) + limit.window - now).total_seconds()
        stop.wait(min(max(wait, 0.005), 1.0))
    return False
