"""Replay and backtest: re-deciding recorded runs without calling a model or an executor.

Both walk a run's events in order, folding state exactly as the live loop did, and at
every recorded decision re-evaluate policy on the state just before it. A *replay* uses
the contract the run was submitted with and the recorded ``count()`` answers, and must
agree bit for bit. A *backtest* uses another contract version and reports which
decisions would change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from charter.contract.model import Contract
from charter.errors import CharterError
from charter.ledger.events import (
    ActionDecided,
    CompensationStarted,
    ReviewRequested,
    RunAdmitted,
    RunCompleted,
    RunFailed,
    RunRefused,
    StoredEvent,
)
from charter.ledger.store import Store
from charter.policy.decision import Decision
from charter.policy.history import HistoryProvider
from charter.primitives import parse_time
from charter.runs.decisions import (
    LedgerHistory,
    RecordedHistory,
    decide_action,
    decide_admit,
    decide_outcome,
)
from charter.runs.state import Folder, RunState


@dataclass(frozen=True)
class RecordedDecision:
    seq: int
    at: str  # admit | action | outcome
    action: str | None
    args: dict[str, Any] | None
    record: dict[str, Any]


def _recorded(stored: StoredEvent) -> RecordedDecision | None:
    ev = stored.event
    if isinstance(ev, ActionDecided):
        return RecordedDecision(stored.seq, "action", ev.action, ev.args, ev.decision)
    if isinstance(ev, RunAdmitted | RunRefused) and ev.decision:
        if isinstance(ev, RunAdmitted) and ev.by_review:
            return None  # the decision was recorded when the review was requested
        if isinstance(ev, RunRefused) and ev.reason.startswith("admission "):
            return None
        return RecordedDecision(stored.seq, "admit", None, None, ev.decision)
    if isinstance(ev, ReviewRequested) and ev.kind in ("admit", "outcome") and ev.decision:
        return RecordedDecision(stored.seq, ev.kind, None, None, ev.decision)
    if (
        isinstance(ev, RunCompleted | RunFailed | CompensationStarted)
        and ev.decision
        and ev.decision.get("at") == "outcome"
    ):
        return RecordedDecision(stored.seq, "outcome", None, None, ev.decision)
    return None


def walk(
    contract: Contract, run_id: str, events: list[StoredEvent]
) -> Iterator[tuple[RunState, RecordedDecision]]:
    """Yield (state just before, recorded decision) for every decision in the run."""
    folder = Folder(contract, run_id)
    seen_outcome_review = False
    for stored in events:
        rec = _recorded(stored)
        if rec is not None:
            if (
                rec.at == "outcome"
                and isinstance(stored.event, RunCompleted | RunFailed)
                and seen_outcome_review
            ):
                rec = None  # completion after an outcome review repeats the reviewed decision
            if rec is not None:
                yield folder.state, rec
            if isinstance(stored.event, ReviewRequested) and stored.event.kind == "outcome":
                seen_outcome_review = True
        folder.apply(stored)


def redecide(
    contract: Contract, state: RunState, rec: RecordedDecision, history: HistoryProvider
) -> Decision:
    now = parse_time(rec.record["now"])
    if rec.at == "admit":
        return decide_admit(contract, state, now, history)
    if rec.at == "outcome":
        return decide_outcome(contract, state, now, history)
    assert rec.action is not None and rec.args is not None
    return decide_action(contract, state, rec.action, rec.args, now, history)


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("elapsed_us", "counts")}


@dataclass
class ReplayResult:
    run_id: str
    decisions: int
    divergence: dict[str, Any] | None = None
    #: decisions (by event) that can no longer be re-made because what they were made on was
    #: erased (``charter erase``), and the events whose content is gone
    unreplayable: list[int] = field(default_factory=list)
    erased_events: list[int] = field(default_factory=list)
    #: why those events are unreadable: ``erased``, or ``no key`` (sealed, no KEK here)
    unreadable_reason: str = ""

    @property
    def agrees(self) -> bool:
        """No replayed decision differs (decisions that cannot be replayed are reported
        in :attr:`unreplayable`, not counted as agreeing or diverging)."""
        return self.divergence is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "decisions": self.decisions,
            "agrees": self.agrees,
            "divergence": self.divergence,
            "unreplayable": self.unreplayable,
            "erased_events": self.erased_events,
            "unreadable_reason": self.unreadable_reason,
        }


def replay(store: Store, contract: Contract, run_id: str) -> ReplayResult:
    """Re-decide every recorded decision of a run with its own contract; report the first
    difference, and the decisions whose inputs were erased (which cannot be re-made)."""
    events = store.events(run_id)
    erased = [e for e in events if e.unreadable]
    if erased:
        decisions = [rec.seq for _, rec in walk(contract, run_id, events)]
        # every decision reads the run's input and observations, sealed from the first event
        return ReplayResult(
            run_id,
            len(decisions),
            None,
            decisions,
            [e.seq for e in erased],
            erased[0].unreadable_reason,
        )
    count = 0
    for state, rec in walk(contract, run_id, events):
        count += 1
        try:
            again = redecide(contract, state, rec, RecordedHistory(rec.record.get("counts", [])))
        except CharterError as exc:
            return ReplayResult(run_id, count, {"seq": rec.seq, "at": rec.at, "error": str(exc)})
        got = _comparable(again.to_dict())
        want = _comparable(rec.record)
        if got != want:
            diff = {
                k: {"recorded": want.get(k), "replayed": got.get(k)}
                for k in sorted(set(got) | set(want))
                if got.get(k) != want.get(k)
            }
            return ReplayResult(
                run_id, count, {"seq": rec.seq, "at": rec.at, "action": rec.action, "fields": diff}
            )
    return ReplayResult(run_id, count)


@dataclass
class Change:
    run_id: str
    seq: int
    at: str
    action: str | None
    before: str
    after: str
    rules_after: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class BacktestResult:
    old: list[str]
    new: str
    runs: int = 0
    decisions: int = 0
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: runs left out because what their decisions were made on is unreadable (erased, or
    #: sealed and this process has no key): re-deciding on stand-ins would invent changes
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        lines = []
        for (at, before, after), n in sorted(self.transitions.items()):
            if before == after:
                continue
            what = "actions" if at == "action" else f"{at} decisions"
            lines.append(
                f"{n} {what} decided {before} under {', '.join(self.old)} would be {after} under {self.new}"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "runs": self.runs,
            "decisions": self.decisions,
            "changed": len(self.changes),
            "transitions": [
                {"at": at, "before": b, "after": a, "count": n}
                for (at, b, a), n in sorted(self.transitions.items())
            ],
            "summary": self.summary(),
            "changes": [c.to_dict() for c in self.changes],
            "errors": self.errors,
            "unreadable": self.unreadable,
        }


def backtest(
    store: Store,
    new: Contract,
    run_ids: list[str],
    contract_for: Any,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Evaluate ``new`` at every decision recorded in ``run_ids`` and count what would change.

    ``progress(done, total)``, if given, is called after each run.
    """
    result = BacktestResult(old=[], new=new.ref)
    old_refs: set[str] = set()
    live = LedgerHistory(store)
    for run_id in run_ids:
        row = store.get_run(run_id)
        old = contract_for(row.policy_hash)
        old_refs.add(old.ref)
        events = store.events(run_id)
        if any(e.unreadable for e in events):
            result.unreadable.append(run_id)
            continue
        result.runs += 1
        for state, rec in walk(old, run_id, events):
            result.decisions += 1
            if rec.action is not None and rec.action not in new.actions:
                after = "deny"
                rules = ["(action not declared)"]
            else:
                try:
                    d = redecide(
                        new,
                        state,
                        rec,
                        RecordedHistory(rec.record.get("counts", []), fallback=live),
                    )
                except CharterError as exc:
                    result.errors.append(f"{run_id} event {rec.seq}: {exc}")
                    continue
                after, rules = d.effect, list(d.rules)
            before = rec.record["effect"]
            result.transitions[(rec.at, before, after)] += 1
            if before != after:
                result.changes.append(
                    Change(run_id, rec.seq, rec.at, rec.action, before, after, rules)
                )
        if progress is not None:
            progress(result.runs, len(run_ids))
    result.old = sorted(old_refs)
    return result
