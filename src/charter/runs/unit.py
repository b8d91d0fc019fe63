"""A leased run's unit of work: what one step changed, applied at once, committed together.

A worker that holds a run's lease folds its events into a :class:`~charter.runs.state.
RunState` and then moves it forward by *applying* events: each event changes the state at
once, so the rest of the step sees it, and joins the step's pending batch. The batch is
committed in one transaction — right before something happens outside the ledger (an
executor is called: ``flush=True``), when the run waits or ends, and before a model call if
anyone else appended meanwhile — against the sequence number the worker last committed and
its lease epoch. Anything still pending when a worker dies is simply redone by the next:
a channel re-read, a decision re-taken, a model re-asked, an executor retried with the same
idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from charter.contract.model import Contract
from charter.errors import ConfigurationError, ConflictError
from charter.ledger.events import (
    ActionCompleted,
    ActionFailed,
    Event,
    ReviewDecided,
    ReviewRequested,
    StoredEvent,
)
from charter.ledger.store import Store
from charter.policy.history import args_match
from charter.primitives import format_time, parse_time
from charter.runs.decisions import LedgerHistory, RecordingHistory
from charter.runs.state import TERMINAL_STATUS, Folder, RunState

Clock = Callable[[], datetime]


def status_after(events: list[Event]) -> dict[str, Any]:
    """The runs row's new ``status`` (and ``wake_at``) after ``events``, if they change it."""
    for ev in reversed(events):
        ended = TERMINAL_STATUS.get(type(ev))
        if ended is not None:
            return {"status": ended, "wake_at": None}
        if isinstance(ev, ReviewRequested):
            return {"status": "waiting", "wake_at": ev.due_at}
        if isinstance(ev, ReviewDecided):
            return {"status": "queued", "wake_at": None}
    return {}


class Unit:
    """One run as the worker holding its lease sees it: committed events plus this step's."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        contract: Contract,
        run_id: str,
        epoch: int,
        renewed: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.contract = contract
        self.run_id = run_id
        self.epoch = epoch
        #: monotonic time of the last lease renewal (the worker's heartbeat reads it)
        self.renewed = renewed
        #: the heartbeat found the lease taken over
        self.lost = False
        self.folder = Folder(contract, run_id)
        self.pending: list[Event] = []
        self.committed = 0
        self.reload()

    @property
    def state(self) -> RunState:
        return self.folder.state

    def reload(self) -> None:
        """Fold the run again from the ledger, dropping whatever this step had not committed
        (someone else appended first: a cancel, a review, a worker that took over)."""
        self.pending = []
        self.folder = Folder(self.contract, self.run_id)
        events = self.store.events(self.run_id)
        self.folder.apply_all(events)
        self.committed = self.state.seq
        unreadable = {e.unreadable_reason for e in events if e.unreadable}
        if "no key" in unreadable:
            raise ConfigurationError(
                f"run {self.run_id} is sealed at rest and this process has no key-encryption "
                "key to read it (CHARTER_KEK or CHARTER_KEK_FILE)"
            )
        #: the run's subject was erased: what it knew is gone, it cannot go on
        self.erased = bool(unreadable)

    def apply(self, events: list[Event], now: datetime, *, flush: bool = False) -> None:
        """Apply events to the run's state now; commit them with the step's other events.

        Events that end the run or make it wait are committed at once; ``flush`` commits
        before something outside the ledger happens (an executor call).
        """
        at = format_time(now)
        for ev in events:
            self.folder.apply(StoredEvent(self.run_id, self.state.seq + 1, at, ev, "", ""))
        self.pending.extend(events)
        if flush or status_after(events):
            self.flush(now)

    def flush(self, now: datetime | None = None) -> None:
        """Commit the pending events, fenced by the lease epoch."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        at = format_time(now or self.clock())
        try:
            self.store.append(
                self.run_id,
                events,
                expected_seq=self.committed,
                at=at,
                epoch=self.epoch,
                **status_after(events),
            )
        except ConflictError:
            self._keep_executor_facts(events, at)
            raise
        self.committed += len(events)

    def ensure_current(self, now: datetime) -> None:
        """Raise :class:`ConflictError` if anyone appended since this worker last committed
        (checked before paying for a model call whose result could not be kept)."""
        if self.store.get_run(self.run_id).last_seq != self.committed:
            # committing now records what executors did, and raises the conflict
            self.flush(now)
            raise ConflictError(f"run {self.run_id} moved on while this worker held it")

    def _keep_executor_facts(self, events: list[Event], at: str) -> None:
        """If the run ended meanwhile (a cancel), what executors did still happened: record
        those results (not the rest) so the ledger and ``count()`` know it."""
        current = self.store.events(self.run_id)
        if not Folder(self.contract, self.run_id).apply_all(current).is_terminal:
            return
        recorded = {
            (e.event.step, e.event.compensation)
            for e in current
            if isinstance(e.event, ActionCompleted | ActionFailed)
        }
        facts = [
            e
            for e in events
            if isinstance(e, ActionCompleted | ActionFailed)
            and (e.step, e.compensation) not in recorded
        ]
        if facts:
            self.store.append(self.run_id, facts, expected_seq=current[-1].seq, at=at)

    def history(self) -> RecordingHistory:
        """``count()`` for a decision of this step: the ledger plus this step's executed
        actions not committed yet, every answer recorded with the decision."""
        return RecordingHistory(_PendingHistory(LedgerHistory(self.store), self))


class _PendingHistory:
    """The ledger's count plus this run's executed actions not committed yet."""

    def __init__(self, inner: LedgerHistory, unit: Unit) -> None:
        self.inner = inner
        self.unit = unit

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        n = self.inner.count(action, match, since, until)
        for ev in self.unit.pending:
            if (
                isinstance(ev, ActionCompleted)
                and not ev.compensation
                and ev.action == action
                and args_match(ev.match_form, match)
                and since <= parse_time(ev.completed_at) <= until
            ):
                n += 1
        return n
