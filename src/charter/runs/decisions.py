"""Building policy requests from a folded run, for the live loop, replay and backtest alike.

Each function takes the state *before* the decision's event and the instant the decision
is about; the history is whatever the caller supplies: the ledger live, the recorded
``count()`` answers in a replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from charter.contract.model import Contract
from charter.errors import CelEvalError
from charter.ledger.store import Store
from charter.policy.cel import Environment
from charter.policy.decision import Decision
from charter.policy.history import HistoryProvider
from charter.primitives import format_time
from charter.runs.state import RunState, outcome_facts


class LedgerHistory:
    """``count()`` answered by the ledger's index of executed actions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        return self.store.count_executed(action, match, format_time(since), format_time(until))


class RecordingHistory:
    """Wraps a history and remembers every answer, to be stored with the decision."""

    def __init__(self, inner: HistoryProvider) -> None:
        self.inner = inner
        self.calls: list[list[Any]] = []

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        n = self.inner.count(action, match, since, until)
        self.calls.append([action, dict(match), format_time(since), format_time(until), n])
        return n


class RecordedHistory:
    """Answers ``count()`` from a decision's recorded answers; unknown questions go to
    ``fallback`` (backtests asking what the old policy never asked) or fail the rule."""

    def __init__(self, calls: list[list[Any]], fallback: HistoryProvider | None = None) -> None:
        self.answers = {(c[0], repr(sorted(c[1].items())), c[2], c[3]): int(c[4]) for c in calls}
        self.fallback = fallback

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        key = (action, repr(sorted(dict(match).items())), format_time(since), format_time(until))
        if key in self.answers:
            return self.answers[key]
        if self.fallback is not None:
            return self.fallback.count(action, match, since, until)
        raise LookupError(
            f"count({action!r}, {dict(match)}) was not asked when this decision was made"
        )


def proposal_facts(state: RunState) -> dict[str, Any]:
    p = state.proposal or {}
    return {"confidence": p.get("confidence", 0.0), "rationale": p.get("rationale", "")}


def _facts(state: RunState, now: datetime) -> dict[str, Any]:
    """What every decision point sees of a run: its input, context, observations and
    counters, at the instant the decision is about."""
    return {
        "input": state.input,
        "context": state.context(),
        "observations": state.observations,
        "run": state.run_facts(now),
        "now": now,
    }


def decide_admit(
    contract: Contract, state: RunState, now: datetime, history: HistoryProvider
) -> Decision:
    return contract.decide(at="admit", history=history, **_facts(state, now))


def decide_action(
    contract: Contract,
    state: RunState,
    name: str,
    args: Mapping[str, Any],
    now: datetime,
    history: HistoryProvider,
) -> Decision:
    return contract.decide(
        at="action",
        action={"name": name, "args": dict(args)},
        proposal=proposal_facts(state),
        history=history,
        **_facts(state, now),
    )


def decide_outcome(
    contract: Contract, state: RunState, now: datetime, history: HistoryProvider
) -> Decision:
    return contract.decide(
        at="outcome",
        proposal=proposal_facts(state),
        outcome=outcome_facts(state),
        history=history,
        **_facts(state, now),
    )


def evaluate_success(
    contract: Contract, state: RunState
) -> tuple[bool | None, float | None, list[str]]:
    """The contract's success criteria and value measure on a finished run.

    A criterion that cannot be evaluated counts as not met (and is reported), like a rule
    failing closed; a value that cannot be computed is recorded as unknown.
    """
    if not contract.success and not contract.value:
        return None, None, []
    variables = {"input": state.input, "outcome": outcome_facts(state), "context": state.context()}
    env = Environment(variables, {})
    errors: list[str] = []
    success: bool | None = None
    if contract.success:
        success = True
        for expr in contract.success:
            try:
                ok = expr.evaluate(env)
            except CelEvalError as exc:
                errors.append(f"success {expr.source!r}: {exc}")
                ok = False
            success = success and ok is True
    value: float | None = None
    if contract.value:
        try:
            raw = contract.value.expr.evaluate(env)
            value = (
                float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
            )
        except CelEvalError as exc:
            errors.append(f"value {contract.value.expr.source!r}: {exc}")
    return success, value, errors
