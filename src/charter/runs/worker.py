"""The worker: claims runs, holds their leases, and hands each step to the step machine.

A worker leases one run at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the file's
write lock on SQLite), folds its events into a :class:`~charter.runs.unit.Unit`, and calls
the step machine until the run ends, must wait, or the worker is told to stop — then
releases the lease. While a step runs (a slow model or executor call) a heartbeat thread
renews the lease through the same :meth:`Worker.renew_if_due` the loop uses between steps,
so a live worker never loses a run mid-call and a dead one stops renewing: its lease
expires, another worker claims the run, and the epoch checked by every append fences the
old one off if it ever wakes up.

Errors sort into three kinds. Another writer got there first (:class:`ConflictError`):
re-read the ledger and carry on. The ledger or this process cannot work (a
:class:`StoreError`, code the contract names that cannot be imported here): stop, leaving
the run as it is for a worker that can. Anything else — a reader, a model or a bug that
raises, even ``sys.exit()`` — fails that run, recorded, so it cannot take down every worker
that claims it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta

from charter.errors import (
    ConfigurationError,
    ConflictError,
    ContractError,
    RunBusyError,
    RunStateError,
    StoreError,
    StoreUnavailableError,
)
from charter.ledger.store import RunRow, Store
from charter.primitives import format_time
from charter.runs.catalog import Catalog
from charter.runs.limits import Limits
from charter.runs.state import RunState
from charter.runs.steps import StepMachine
from charter.runs.unit import Unit

_log = logging.getLogger("charter.worker")


class Worker:
    """Processes runs: one claimed run at a time, with one heartbeat keeping its lease."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        machine: StepMachine,
        *,
        clock: Callable[[], datetime],
        worker_id: str,
        lease: timedelta,
        limits: Limits,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.machine = machine
        self.clock = clock
        self.worker_id = worker_id
        self.lease = lease
        self.limits = limits
        self.stopping = stop
        self._current: Unit | None = None  # the run the heartbeat keeps leased
        self._heartbeat: threading.Thread | None = None

    # -- claiming ----------------------------------------------------------------------
    def run(self, run_id: str) -> RunState:
        """Process one run in this process until it ends or waits (``run start --wait``)."""
        row = self.store.find_run(run_id)
        for _ in range(200):
            now = self.clock()
            leased = self.store.claim_run(
                row.run_id, self.worker_id, format_time(now), format_time(now + self.lease)
            )
            if leased is not None:
                return self.process(leased)
            time.sleep(0.05)
        raise RunBusyError(
            f"run {row.run_id} is held by another worker; try again or let it finish"
        )

    def work_once(self) -> str | None:
        """Claim and process one runnable run; return its id, or ``None`` if none was ready."""
        now = self.clock()
        leased = self.store.claim(
            self.worker_id,
            format_time(now),
            format_time(now + self.lease),
            max_per_contract=self.limits.max_per_contract or None,
        )
        if leased is None:
            return None
        self.process(leased)
        return leased.run_id

    def work(
        self, *, idle_exit: float | None = None, poll: float = 0.25, max_runs: int | None = None
    ) -> int:
        """Process runs until stopped, idle for ``idle_exit`` s, or ``max_runs``.

        When idle, waits on the store (``Store.wait_for_work``): PostgreSQL wakes the worker
        as soon as a run is queued, SQLite polls every ``poll`` s. A database that drops the
        connection or is briefly unreachable does not end the worker: it backs off and
        carries on (whatever it was doing is either committed or picked up again).
        """
        done = 0
        idle_since = time.monotonic()
        backoff = poll
        while not self.stopping.is_set():
            if max_runs is not None and done >= max_runs:
                break
            try:
                run_id = self.work_once()
            except StoreUnavailableError as exc:
                _log.warning("worker %s: %s; retrying in %.2fs", self.worker_id, exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = poll
            if run_id is not None:
                done += 1
                idle_since = time.monotonic()
                continue
            if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                break
            self.store.wait_for_work(poll, self.stopping)
        return done

    # -- one run -----------------------------------------------------------------------
    def process(self, row: RunRow) -> RunState:
        """Step a claimed run until it ends, waits, or the worker stops; then release it."""
        try:
            contract = self.catalog.contract_for(row.policy_hash)
            self.catalog.ensure_runnable(contract, self.worker_id)
            unit = Unit(self.store, self.clock, contract, row.run_id, row.epoch, time.monotonic())
        except (ConfigurationError, ContractError) as exc:
            # a worker problem, not the run's (code it cannot import, a sealed run it has no
            # key for): leave the run for a worker that can, and stop this one
            self.store.release(row.run_id, self.worker_id, row.epoch)
            raise ConfigurationError(
                f"{exc}; run {row.run_id} was left untouched for a worker that can"
            ) from None
        self._current = unit
        self._start_heartbeat()
        try:
            if unit.erased and not unit.state.is_terminal:
                # its subject's data was erased while it was unfinished: nothing to go on
                self.machine.fail(unit, RunStateError("the subject's data was erased"))
            while not unit.state.is_terminal and not self.stopping.is_set():
                try:
                    if unit.lost or self.renew_if_due(unit) is False:
                        raise ConflictError(f"lease on {unit.run_id} lost")
                    if not self.machine.step(unit):
                        unit.flush()
                        break
                except ConflictError:
                    # someone else appended (a cancel, a review): re-read and carry on
                    unit.reload()
                    if self.store.get_run(row.run_id).epoch != unit.epoch:
                        break
                except (StoreError, ConfigurationError):
                    raise
                except (Exception, SystemExit) as exc:
                    # a reader, model or bug that raises (or calls sys.exit) must not kill the
                    # worker and leave the run queued to kill the next one: the run fails,
                    # recorded
                    self.machine.fail(unit, exc)
            unit.flush()  # stopped between steps: commit what the last step did
        except ConflictError:
            unit.pending = []
        finally:
            self._current = None
            self.store.release(row.run_id, self.worker_id, unit.epoch)
        return unit.state

    # -- the lease ---------------------------------------------------------------------
    def renew_if_due(self, unit: Unit) -> bool | None:
        """Renew the lease if a third of it has passed since the last renewal.

        ``None``: not due; ``True``: renewed; ``False``: the lease was taken over. The only
        renewal path: the loop calls it between steps, the heartbeat during a long one.
        """
        if time.monotonic() - unit.renewed < self.lease.total_seconds() / 3:
            return None
        now = self.clock()
        if not self.store.renew(
            unit.run_id, self.worker_id, unit.epoch, format_time(now + self.lease)
        ):
            return False
        unit.renewed = time.monotonic()
        return True

    def beat(self) -> None:
        """One heartbeat: renew the current run's lease if due; mark it lost if taken over."""
        unit = self._current
        if unit is None or unit.lost:
            return
        try:
            renewed = self.renew_if_due(unit)
        except Exception as exc:  # a heartbeat must never take the worker down
            _log.warning("worker %s: heartbeat of %s failed: %s", self.worker_id, unit.run_id, exc)
            return
        if renewed is False and self._current is unit:
            unit.lost = True

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(
                target=_heartbeat,
                args=(weakref.ref(self),),
                name=f"charter-heartbeat:{self.worker_id}",
                daemon=True,
            )
            self._heartbeat.start()


def _heartbeat(ref: weakref.ReferenceType[Worker]) -> None:
    """Body of a worker's heartbeat thread; ends when the worker is stopped or collected."""
    while True:
        worker = ref()
        if worker is None:
            return
        if worker.stopping.is_set() and worker._current is None:
            return
        period = max(worker.lease.total_seconds() / 12, 0.01)
        worker.beat()
        del worker
        time.sleep(min(period, 2.5))
