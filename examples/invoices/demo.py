"""Run a batch of generated invoices through the invoices contract.

:func:`choose_model` picks a real model when one is configured, else ``None`` (the
contract's scripted model):

- ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` set: ``openai:$CHARTER_INVOICES_MODEL``
  (default ``gpt-4o-mini``, or ``llama3.2`` when only ``OPENAI_BASE_URL`` points at a
  local server such as Ollama);
- else ``ANTHROPIC_API_KEY`` set: ``anthropic:$CHARTER_INVOICES_MODEL`` (default
  ``claude-haiku-4-5``).

The choice is recorded with every run (``RunSubmitted.model``), so ``charter report``
and ``charter run show`` say which model decided what.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from charter import ActionDecided, Contract, Runtime
from examples.invoices import ap

CONTRACT = Path(__file__).with_name("invoices.yaml")
MODEL_ENV = "CHARTER_INVOICES_MODEL"


def choose_model(env: Mapping[str, str] | None = None) -> str | None:
    """``provider:model`` for the configured real model, or ``None`` for the scripted one."""
    env = os.environ if env is None else env
    name = env.get(MODEL_ENV)
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        default = "gpt-4o-mini" if env.get("OPENAI_API_KEY") else "llama3.2"
        return f"openai:{name or default}"
    if env.get("ANTHROPIC_API_KEY"):
        return f"anthropic:{name or 'claude-haiku-4-5'}"
    return None


def run(
    runtime: Runtime, *, invoices: int = 60, seed: int = 11, model: str | None = None
) -> dict[str, Any]:
    """Seed the AP system, submit one run per invoice, process them all, and summarise."""
    contract = Contract.load(CONTRACT)
    suppliers, cases = ap.generate(invoices, seed)
    ap.seed(suppliers, cases)
    by_run: dict[str, ap.Case] = {}
    for case in cases:
        run_id = runtime.submit(
            contract, case.input, idempotency_key=f"invoices:{seed}:{case.invoice_id}", model=model
        )
        by_run[run_id] = case
    while runtime.work_once() is not None:
        pass
    statuses: Counter[str] = Counter()
    effects: Counter[str] = Counter()
    stopped: Counter[str] = Counter()
    cost = 0.0
    for run_id in by_run:
        state = runtime.state(run_id)
        statuses[state.status] += 1
        cost += state.cost_usd
        for stored in runtime.store.events(run_id):
            ev = stored.event
            if isinstance(ev, ActionDecided):
                effects[ev.decision["effect"]] += 1
                if ev.decision["effect"] != "allow":
                    for rule in ev.decision.get("rules", []):
                        stopped[rule] += 1
    with ap.connection() as conn:
        ledger = {
            "approved": conn.execute("SELECT count(*) FROM approvals").fetchone()[0],
            "approved_cents": conn.execute(
                "SELECT coalesce(sum(amount_cents), 0) FROM approvals"
            ).fetchone()[0],
            "held": conn.execute("SELECT count(*) FROM holds").fetchone()[0],
            "queries": conn.execute("SELECT count(*) FROM supplier_queries").fetchone()[0],
            "queries_to_others": conn.execute(
                "SELECT count(*) FROM supplier_queries q JOIN suppliers s USING (supplier_id) "
                "WHERE lower(q.to_addr) != lower(s.email)"
            ).fetchone()[0],
        }
    return {
        "model": model or "scripted (no real model configured)",
        "invoices": len(cases),
        "runs": dict(statuses),
        "decisions": dict(effects),
        "stopped_by_rule": dict(stopped),
        "ap": ledger,
        "cost_usd": round(cost, 6),
    }
