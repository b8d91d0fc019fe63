"""A ledger with a run in each state that fills a projection, on every store.

Import the ``populated`` fixture (with ``ledger``, ``store_kind``, ``effects`` and ``clock``
from ``tests.ledger.conftest``) into a test module to use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from charter.ledger.sqlbase import SqlStore
from charter.runs.runtime import Runtime
from tests.runs.domain import Clock, Effects, contract

BIG = [[["write", {"item": "crate", "qty": 500}]]]  # rule big-write: review


@dataclass
class Populated:
    url: str
    rt: Runtime
    clock: Clock
    done: str  # completed after two writes and three model calls
    waiting: str  # waiting for a review of a large write
    approved: str  # its large write reviewed, approved, executed; completed
    cancelled: str  # cancelled while waiting: its review is cancelled

    @property
    def store(self) -> SqlStore:
        assert isinstance(self.rt.store, SqlStore)
        return self.rt.store

    @property
    def runs(self) -> list[str]:
        return self.store.run_ids()


def populate(url: str, clock: Clock) -> Populated:
    rt = Runtime(url, clock=clock, worker_id="w")
    done = rt.submit(contract(), {"item": "bolt"})
    assert rt.run(done).status == "completed"
    planned = contract(script="planned")
    waiting = rt.submit(planned, {"item": "crate", "plan": BIG})
    approved = rt.submit(planned, {"item": "crate", "plan": BIG})
    cancelled = rt.submit(planned, {"item": "crate", "plan": BIG})
    for run_id in (waiting, approved, cancelled):
        assert rt.run(run_id).status == "waiting"
    review = rt.state(approved).review
    assert review is not None
    rt.decide_review(review.review_id, "approve", by="alice", comment="ok")
    assert rt.run(approved).status == "completed"
    rt.cancel(cancelled, by="ops", reason="not today")
    return Populated(url, rt, clock, done, waiting, approved, cancelled)


@pytest.fixture
def populated(ledger: str, clock: Clock, effects: Effects) -> Iterator[Populated]:
    p = populate(ledger, clock)
    yield p
    p.rt.store.close()
