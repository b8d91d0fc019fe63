"""Per-contract figures from the ledger: what was delegated, what it cost, what people did.

Everything here is computed from events (not projections), so the report of a ledger and
of its replay agree.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from charter.errors import StoreError
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ModelCalled,
    ReviewDecided,
    ReviewRequested,
    RunCompleted,
    RunSubmitted,
)
from charter.ledger.store import Store
from charter.primitives import parse_time
from charter.runs.state import TERMINAL


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no data."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class ContractReport:
    contract: str
    runs: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    executed: int = 0
    reviews_decided: int = 0
    overrides: int = 0
    expired: int = 0
    model_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    value: float = 0.0
    value_unit: str | None = None
    latencies: list[float] = field(default_factory=list)
    #: per ``provider:model``: calls, tokens by kind, USD, unpriced calls
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: spend in the current UTC day and month with the contract's limits (set by callers
    #: that know the contract; see :func:`charter.runs.spend.window_spend`)
    spend: dict[str, dict[str, Any]] | None = None
    #: runs whose events could not be read (``run_id: reason``); counted by status only
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "runs": dict(self.runs),
            "actions": {
                "auto_allowed": self.actions["allow"],
                "reviewed": self.actions["review"] + self.actions["batch"],
                "escalated": self.actions["escalate"],
                "denied": self.actions["deny"],
                "executed": self.executed,
            },
            "reviews": {
                "decided": self.reviews_decided,
                "overridden": self.overrides,
                "expired": self.expired,
                "override_rate": round(self.overrides / self.reviews_decided, 4)
                if self.reviews_decided
                else None,
            },
            "model_calls": self.model_calls,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "models": [
                {
                    "model": k,
                    **{n: round(v, 6) if isinstance(v, float) else v for n, v in m.items()},
                }
                for k, m in sorted(self.models.items())
            ],
            "spend": self.spend,
            "value": round(self.value, 2) if self.value_unit else None,
            "value_unit": self.value_unit,
            "latency_s": {
                "p50": percentile(self.latencies, 50),
                "p95": percentile(self.latencies, 95),
            },
            "unreadable_runs": list(self.unreadable),
        }


def build_report(
    store: Store, contract: str | None = None, value_units: dict[str, str] | None = None
) -> list[ContractReport]:
    reports: dict[str, ContractReport] = {}
    units = value_units or {}
    for row in store.list_runs(contract=contract, limit=1_000_000):
        rep = reports.setdefault(
            row.contract, ContractReport(row.contract, value_unit=units.get(row.contract))
        )
        rep.runs[row.status] += 1
        submitted: str | None = None
        requested: dict[str, ReviewRequested] = {}
        last_at = row.updated_at
        try:
            events = store.events(row.run_id)
        except StoreError as exc:
            # one damaged run (``charter verify`` says which link) must not hide the others
            rep.unreadable.append(f"{row.run_id}: {exc}")
            continue
        for stored in events:
            ev = stored.event
            if isinstance(ev, RunSubmitted):
                submitted = ev.submitted_at or stored.at
            elif isinstance(ev, ModelCalled):
                rep.model_calls += 1
                rep.tokens += ev.input_tokens + ev.output_tokens
                rep.cost_usd += ev.cost_usd
                m = rep.models.setdefault(
                    f"{ev.provider}:{ev.model}",
                    {
                        "calls": 0,
                        "input_tokens": 0,
                        "cached_input_tokens": 0,
                        "output_tokens": 0,
                        "reasoning_tokens": 0,
                        "cost_usd": 0.0,
                        "unpriced_calls": 0,
                    },
                )
                m["calls"] += 1
                m["input_tokens"] += ev.input_tokens
                m["cached_input_tokens"] += ev.cached_input_tokens or 0
                m["output_tokens"] += ev.output_tokens
                m["reasoning_tokens"] += ev.reasoning_tokens or 0
                m["cost_usd"] += ev.cost_usd
                # calls recorded before price tables existed have no version either
                if ev.price_version is None and ev.provider not in ("scripted", "replay"):
                    m["unpriced_calls"] += 1
            elif isinstance(ev, ActionDecided):
                if not _redecision(ev, requested):
                    rep.actions[ev.decision["effect"]] += 1
            elif isinstance(ev, ReviewRequested):
                requested[ev.review_id] = ev
            elif isinstance(ev, ReviewDecided):
                if ev.verdict == "expired":
                    rep.expired += 1
                else:
                    rep.reviews_decided += 1
                    if ev.verdict == "reject" or ev.edited_args is not None:
                        rep.overrides += 1
            elif isinstance(ev, ActionCompleted) and not ev.compensation:
                rep.executed += 1
            elif isinstance(ev, RunCompleted) and ev.value is not None:
                rep.value += ev.value
            last_at = stored.at
        if submitted and row.status in TERMINAL:
            rep.latencies.append(
                round((parse_time(last_at) - parse_time(submitted)).total_seconds(), 3)
            )
    return [reports[k] for k in sorted(reports)]


def _redecision(ev: ActionDecided, requested: dict[str, ReviewRequested]) -> bool:
    """A decision taken again after a reviewer edited the arguments is not a new proposal."""
    return any(r.step == ev.step for r in requested.values())
