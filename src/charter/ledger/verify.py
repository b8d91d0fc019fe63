"""Checking hash chains: is every run's history exactly what was written?"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from charter.errors import StoreError
from charter.ledger.chain import GENESIS, event_hash
from charter.ledger.store import Store
from charter.primitives import canonical


@dataclass(frozen=True)
class Broken:
    """The first link of a run's chain that does not hold, and why."""

    run_id: str
    seq: int
    problem: str

    def to_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "seq": self.seq, "problem": self.problem}


def verify_run(store: Store, run_id: str) -> Broken | None:
    """Recompute the chain of one run; ``None`` when intact, else the first broken link."""
    prev = GENESIS
    expected_seq = 1
    try:
        for raw in store.raw_events(run_id):
            if raw.seq != expected_seq:
                return Broken(
                    run_id,
                    expected_seq,
                    f"event {expected_seq} is missing (next stored is {raw.seq})",
                )
            if raw.prev_hash != prev:
                return Broken(
                    run_id, raw.seq, "previous-hash link does not match the event before it"
                )
            try:
                data_json = canonical(json.loads(raw.data_json))
            except json.JSONDecodeError:
                return Broken(run_id, raw.seq, "payload is not valid JSON")
            recomputed = event_hash(prev, run_id, raw.seq, raw.type, raw.at, data_json)
            if recomputed != raw.hash:
                return Broken(
                    run_id, raw.seq, "content does not match its hash (the event was altered)"
                )
            prev = raw.hash
            expected_seq += 1
    except StoreError as exc:
        return Broken(run_id, expected_seq, str(exc))
    row = store.get_run(run_id)
    if row.last_seq != expected_seq - 1 or row.last_hash != prev:
        return Broken(
            run_id,
            expected_seq,
            f"run head says event {row.last_seq} but the chain ends at {expected_seq - 1} (events deleted?)",
        )
    return None


def verify(
    store: Store, run_ids: list[str], progress: Callable[[int, int], None] | None = None
) -> tuple[int, list[Broken]]:
    """Verify several runs; return how many were checked and every broken one.

    ``progress(done, total)``, if given, is called after each run.
    """
    broken: list[Broken] = []
    for done, run_id in enumerate(run_ids, 1):
        found = verify_run(store, run_id)
        if found is not None:
            broken.append(found)
        if progress is not None:
            progress(done, len(run_ids))
    return len(run_ids), broken
