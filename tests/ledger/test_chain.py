"""Every run's events form a hash chain: any edit, deletion or truncation is found."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from charter.errors import StoreError
from charter.ledger.events import RunSubmitted
from charter.ledger.sqlite import SQLiteStore
from charter.ledger.store import open_store
from charter.ledger.verify import Broken, verify, verify_run
from charter.runs.runtime import Runtime
from tests.ledger.tamper import edit_event, execute, query, seq_of
from tests.runs.domain import Clock, Effects, contract


@pytest.fixture
def done(rt: Runtime) -> str:
    """A completed run of 17 events (two writes)."""
    run_id = rt.submit(contract(), {"item": "bolt"})
    assert rt.run(run_id).status == "completed"
    return run_id


def test_an_untouched_ledger_verifies(rt: Runtime, done: str) -> None:
    other = rt.submit(contract(), {"item": "nut"})
    assert verify_run(rt.store, done) is None
    assert verify(rt.store, [done, other]) == (2, [])
    events = rt.store.events(done)
    assert [e.seq for e in events] == list(range(1, 18))
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))


def test_an_edited_event_is_found_at_its_position(rt: Runtime, db: Path, done: str) -> None:
    seq = seq_of(db, done, "action.decided")
    edit_event(db, done, seq, lambda d: d["decision"].update(effect="deny"))
    assert verify_run(rt.store, done) == Broken(
        done, seq, "content does not match its hash (the event was altered)"
    )


def test_an_edited_input_is_found(rt: Runtime, db: Path, done: str) -> None:
    execute(
        db,
        "UPDATE events SET data = json_set(data, '$.input.item', 'gold') WHERE run_id = ? AND seq = 1",
        (done,),
    )
    broken = verify_run(rt.store, done)
    assert broken is not None and broken.seq == 1


@pytest.mark.parametrize("column", ["type", "at"])
def test_edited_metadata_is_found(rt: Runtime, db: Path, done: str, column: str) -> None:
    value = "run.failed" if column == "type" else "2020-01-01T00:00:00.000000Z"
    execute(db, f"UPDATE events SET {column} = ? WHERE run_id = ? AND seq = 17", (value, done))
    broken = verify_run(rt.store, done)
    assert broken is not None and broken.seq == 17


def test_reformatting_the_json_is_not_tampering(rt: Runtime, db: Path, done: str) -> None:
    [(data,)] = query(db, "SELECT data FROM events WHERE run_id = ? AND seq = 5", (done,))
    pretty = json.dumps(json.loads(data), indent=2)
    execute(db, "UPDATE events SET data = ? WHERE run_id = ? AND seq = 5", (pretty, done))
    assert verify_run(rt.store, done) is None


def test_an_event_re_hashed_alone_breaks_the_next_link(rt: Runtime, db: Path, done: str) -> None:
    from charter.ledger.chain import event_hash
    from charter.primitives import canonical

    edit_event(db, done, 9, lambda d: d["result"].update(qty=99))
    [(prev, type_, at, data)] = query(
        db, "SELECT prev_hash, type, at, data FROM events WHERE run_id = ? AND seq = 9", (done,)
    )
    forged = event_hash(prev, done, 9, type_, at, canonical(json.loads(data)))
    execute(db, "UPDATE events SET hash = ? WHERE run_id = ? AND seq = 9", (forged, done))
    assert verify_run(rt.store, done) == Broken(
        done, 10, "previous-hash link does not match the event before it"
    )


def test_a_deleted_event_is_found(rt: Runtime, db: Path, done: str) -> None:
    execute(db, "DELETE FROM events WHERE run_id = ? AND seq = 7", (done,))
    assert verify_run(rt.store, done) == Broken(done, 7, "event 7 is missing (next stored is 8)")


def test_a_truncated_tail_is_found(rt: Runtime, db: Path, done: str) -> None:
    execute(db, "DELETE FROM events WHERE run_id = ? AND seq = 17", (done,))
    broken = verify_run(rt.store, done)
    assert broken is not None and broken.seq == 17
    assert "run head says event 17 but the chain ends at 16" in broken.problem


def test_swapped_events_are_found(rt: Runtime, db: Path, done: str) -> None:
    execute(db, "UPDATE events SET seq = -1 WHERE run_id = ? AND seq = 9", (done,))
    execute(db, "UPDATE events SET seq = 9 WHERE run_id = ? AND seq = 14", (done,))
    execute(db, "UPDATE events SET seq = 14 WHERE run_id = ? AND seq = -1", (done,))
    broken = verify_run(rt.store, done)
    assert broken is not None and broken.seq == 9


def test_one_broken_run_does_not_hide_others(rt: Runtime, db: Path, done: str) -> None:
    other = rt.submit(contract(), {"item": "nut"})
    execute(db, "DELETE FROM events WHERE run_id = ? AND seq = 3", (done,))
    checked, broken = verify(rt.store, [other, done])
    assert checked == 2
    assert [(b.run_id, b.seq) for b in broken] == [(done, 3)]


# -- payloads by reference ----------------------------------------------------------------
def test_large_payloads_are_stored_by_reference_and_read_back_identically(
    db: Path, clock: Clock, effects: Effects
) -> None:
    rt = Runtime(SQLiteStore(db, payload_cap=2048), clock=clock)
    note = "Please restock. " * 400  # ~6 KB: over the cap
    payload = {"item": "bolt", "note": note}
    run_id = rt.submit(contract(), payload)
    assert rt.run(run_id).status == "completed"
    [(data,)] = query(db, "SELECT data FROM events WHERE run_id = ? AND seq = 1", (run_id,))
    ref = json.loads(data)
    assert set(ref) == {"$blob", "size"} and ref["size"] > 6000
    [(size, blob)] = query(db, "SELECT size, data FROM blobs WHERE sha256 = ?", (ref["$blob"],))
    assert size == len(blob) == ref["size"]
    first = rt.store.events(run_id)[0].event
    assert isinstance(first, RunSubmitted) and first.input == payload
    # model calls carry the prompt (with the note) and are large too; small events stay inline
    inline = query(
        db, "SELECT type FROM events WHERE run_id = ? AND data NOT LIKE '{\"$blob\"%'", (run_id,)
    )
    assert ("model.called",) not in inline and ("run.admitted",) in inline
    assert verify_run(rt.store, run_id) is None
    state = rt.state(run_id)
    assert state.input == payload and state.status == "completed"


def test_the_payload_cap_comes_from_the_environment(
    db: Path, monkeypatch: pytest.MonkeyPatch, effects: Effects
) -> None:
    monkeypatch.setenv("CHARTER_PAYLOAD_CAP", "100")
    store = open_store(str(db))
    assert store.payload_cap == 100
    run_id = Runtime(store).submit(contract(), {"item": "x" * 200})
    assert query(db, "SELECT count(*) FROM blobs") == [(1,)]
    assert verify_run(store, run_id) is None


def test_an_edited_blob_is_found(db: Path, effects: Effects) -> None:
    rt = Runtime(SQLiteStore(db, payload_cap=256))
    run_id = rt.submit(contract(), {"item": "bolt", "note": "n" * 1000})
    execute(db, "UPDATE blobs SET data = replace(data, 'nnnn', 'mmmm')")
    broken = verify_run(rt.store, run_id)
    assert broken is not None and broken.seq == 1
    assert "altered" in broken.problem


def test_a_missing_blob_is_reported(db: Path, effects: Effects) -> None:
    rt = Runtime(SQLiteStore(db, payload_cap=256))
    run_id = rt.submit(contract(), {"item": "bolt", "note": "n" * 1000})
    execute(db, "DELETE FROM blobs")
    broken = verify_run(rt.store, run_id)
    assert broken is not None and broken.seq == 1
    assert "missing from the ledger" in broken.problem
    with pytest.raises(StoreError, match="missing from the ledger"):
        rt.store.events(run_id)


def test_a_payload_that_is_not_json_is_reported(rt: Runtime, db: Path, done: str) -> None:
    execute(db, "UPDATE events SET data = '{oops' WHERE run_id = ? AND seq = 4", (done,))
    assert verify_run(rt.store, done) == Broken(done, 4, "payload is not valid JSON")
    with pytest.raises(StoreError, match=r"event 4 of run .* is not valid JSON.*charter verify"):
        rt.store.events(done)


def test_an_unknown_event_type_is_an_error_not_a_skipped_fact(
    rt: Runtime, db: Path, done: str
) -> None:
    execute(db, "UPDATE events SET type = 'run.teleported' WHERE run_id = ? AND seq = 4", (done,))
    with pytest.raises(StoreError, match=r"unknown event type 'run\.teleported'"):
        rt.state(done)
