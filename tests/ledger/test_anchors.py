"""Anchors find what no single run's chain can: runs deleted, cut or re-hashed since an
anchor, anchors removed or rewritten, and a sink that disagrees — on every store.

Each tampering leaves every chain intact (the chain check, ``verify``, reports every run
intact, as ``charter verify`` did before anchors); ``verify_anchors`` names the run or the
anchor.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from charter.errors import StoreError
from charter.ledger.anchor import (
    GENESIS,
    Anchor,
    AnchorReport,
    FileSink,
    MerkleTree,
    anchor_hash,
    leaf_hash,
    merkle_root,
    publish,
    verify_anchors,
    write_anchor,
)
from charter.ledger.verify import verify, verify_ledger
from tests.ledger.populated import BIG, Populated, populated
from tests.ledger.tampering import cut_tail, delete_run, edit_event, rechain, seq_of
from tests.runs.domain import contract
from tests.stores import sql

__all__ = ["populated"]


def chains_intact(p: Populated) -> None:
    ids = p.runs
    assert verify(p.store, ids) == (len(ids), [])


def kinds(report: AnchorReport) -> list[tuple[str, str | None]]:
    return [(a.kind, a.run_id) for a in report.problems]


def anchor(p: Populated, sink: FileSink | None = None) -> Anchor:
    """Anchor now (the test clock, a minute on), publish to ``sink``."""
    p.clock.advance(timedelta(minutes=1))
    done = write_anchor(p.store, now=p.clock())
    if sink is not None:
        publish(p.store, sink)
    return done.anchor


@pytest.fixture
def sink(tmp_path: Path) -> FileSink:
    return FileSink(tmp_path / "anchors.jsonl")


# -- the format ---------------------------------------------------------------------------
def _rfc6962(leaves: list[bytes]) -> bytes:
    """RFC 6962's Merkle Tree Hash, as the RFC writes it (split at the largest power of 2)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _rfc6962(leaves[:k]) + _rfc6962(leaves[k:])).digest()


def test_the_merkle_root_is_rfc6962s_however_it_was_updated() -> None:
    leaves = [leaf_hash(f"run_{i:03}", i + 1, f"{i:064x}") for i in range(37)]
    for n in range(len(leaves) + 1):
        assert merkle_root(leaves[:n]) == _rfc6962(leaves[:n]).hex()
    tree = MerkleTree()
    for i in range(20):  # grown one anchor at a time, some leaves replaced on the way
        tree.set(i, leaves[i])
        if i % 3 == 0:
            tree.set(i // 2, leaves[30 + i % 7])
        expected = [*leaves[: i + 1]]
        for j in range(0, i + 1, 3):
            expected[j // 2] = leaves[30 + j % 7]
        assert tree.root() == _rfc6962(expected).hex()


def test_an_anchor_is_chained_to_the_one_before(populated: Populated, sink: FileSink) -> None:
    first = anchor(populated, sink)
    second = anchor(populated, sink)
    assert (first.index, first.prev_hash, first.runs) == (1, GENESIS, 4)
    assert second.prev_hash == first.hash and second.index == 2
    assert first.valid and second.valid
    assert second.hash == anchor_hash(first.hash, 2, second.at, second.root, 4)
    assert [json.loads(line) for line in sink.path.read_text().splitlines()] == [
        first.to_dict(),
        second.to_dict(),
    ]
    report = verify_anchors(populated.store, sink)
    assert report.ok and report.notes == []
    assert (report.anchors, report.covered, report.sink_entries) == (2, 4, 2)


def test_an_anchor_stores_only_the_heads_that_changed(populated: Populated) -> None:
    """The size trade-off: a run costs a leaf row only when it moved since the last anchor."""
    anchor(populated)
    anchor(populated)  # nothing moved
    review = populated.rt.state(populated.waiting).review
    assert review is not None
    populated.rt.decide_review(review.review_id, "reject", by="alice", comment="no")
    populated.rt.run(populated.waiting)
    new = populated.rt.submit(contract(), {"item": "nut"})
    third = anchor(populated)
    leaves = sql(populated.url, "SELECT idx, count(*) FROM anchor_leaves GROUP BY idx ORDER BY idx")
    assert leaves == [(1, 4), (3, 2)]  # anchor 2: none; anchor 3: the moved run and the new
    assert third.runs == 5
    assert verify_anchors(populated.store).ok
    assert new in {
        r for (r,) in sql(populated.url, "SELECT run_id FROM anchor_leaves WHERE idx = 3")
    }


def test_runs_created_after_the_last_anchor_are_simply_not_covered(populated: Populated) -> None:
    anchor(populated)
    populated.rt.submit(contract(), {"item": "nut"})
    report = verify_anchors(populated.store)
    assert report.ok and report.covered == 4


# -- runs changed behind the ledger's back ------------------------------------------------
def test_a_deleted_run_is_named(populated: Populated) -> None:
    anchor(populated)
    delete_run(populated.url, populated.approved)
    chains_intact(populated)
    assert verify_ledger(populated.store, populated.runs, whole=True).ok  # tracks covered
    report = verify_anchors(populated.store)
    assert kinds(report) == [("deleted", populated.approved)]
    [problem] = report.problems
    assert problem.index == 1
    assert f"run {populated.approved} was deleted: anchor 1 covered it at event" in problem.message


def test_a_cut_tail_with_its_head_moved_back_is_named(populated: Populated) -> None:
    anchor(populated)
    keep = seq_of(populated.url, populated.done, "action.completed") - 1
    cut_tail(populated.url, populated.done, keep)
    chains_intact(populated)
    report = verify_anchors(populated.store)
    assert kinds(report) == [("cut", populated.done)]
    assert f"its chain now ends at event {keep}" in report.problems[0].message


def test_a_chain_re_hashed_after_an_edit_is_named(populated: Populated) -> None:
    anchor(populated)
    seq = seq_of(populated.url, populated.done, "action.decided")
    edit_event(populated.url, populated.done, seq, lambda d: d["decision"].update(effect="deny"))
    rechain(populated.url, populated.done)
    chains_intact(populated)
    report = verify_anchors(populated.store)
    assert kinds(report) == [("rehashed", populated.done)]
    assert "re-hashed" in report.problems[0].message


def test_damage_before_a_later_anchor_is_still_found_by_the_earlier(populated: Populated) -> None:
    """Anchoring after the damage does not launder it: ``charter anchor`` warns, and the
    earlier anchor still names the run."""
    anchor(populated)
    delete_run(populated.url, populated.cancelled)
    populated.clock.advance(timedelta(minutes=1))
    done = write_anchor(populated.store, now=populated.clock())
    assert done.gone == [populated.cancelled] and done.anchor.runs == 3
    report = verify_anchors(populated.store)
    assert kinds(report) == [("deleted", populated.cancelled)]


def test_charter_anchor_warns_of_a_shorter_chain(populated: Populated) -> None:
    anchor(populated)
    cut_tail(populated.url, populated.done, 3)
    populated.clock.advance(timedelta(minutes=1))
    done = write_anchor(populated.store, now=populated.clock())
    assert done.shorter == [
        (
            populated.done,
            sql(
                populated.url,
                "SELECT max(seq) FROM anchor_leaves WHERE idx = 1 AND run_id = ?",
                (populated.done,),
            )[0][0],
            3,
        )
    ]


def test_a_run_inserted_later_with_a_backdated_time_is_named(populated: Populated) -> None:
    anchor(populated)
    populated.clock.advance(timedelta(hours=-1))  # a run dated well before that anchor
    forged = populated.rt.submit(contract(script="planned"), {"item": "crate", "plan": BIG})
    report = verify_anchors(populated.store)
    assert kinds(report) == [("backdated", forged)]


def test_edited_leaves_no_longer_give_their_anchors_root(populated: Populated) -> None:
    """Hiding a deletion by deleting its leaves too breaks the anchor's root."""
    anchor(populated)
    delete_run(populated.url, populated.done)
    sql(populated.url, "DELETE FROM anchor_leaves WHERE run_id = ?", (populated.done,))
    report = verify_anchors(populated.store)
    assert kinds(report) == [("root", None)]
    assert "anchor 1: its stored leaves give root" in report.problems[0].message


# -- the anchor log and the sink ----------------------------------------------------------
def test_a_removed_anchor_is_found(populated: Populated) -> None:
    for _ in range(3):
        anchor(populated)
    sql(populated.url, "DELETE FROM anchors WHERE idx = 2")
    report = verify_anchors(populated.store)
    assert kinds(report) == [("chain", None)]
    assert report.problems[0].message == "anchor(s) 2 missing from the ledger (removed)"


def test_reordered_anchors_are_found(populated: Populated) -> None:
    anchor(populated)
    anchor(populated)
    sql(populated.url, "UPDATE anchors SET idx = idx + 10")
    sql(populated.url, "UPDATE anchors SET idx = 1 WHERE idx = 12")
    sql(populated.url, "UPDATE anchors SET idx = 2 WHERE idx = 11")
    messages = [p.message for p in verify_anchors(populated.store).problems]
    assert (
        "anchor 1 does not link to anchor 0 (anchors removed, reordered or rewritten)" in messages
    )
    assert "anchor 1 was altered: its hash does not match its content" in messages


def test_the_removed_last_anchor_is_found_in_the_sink(populated: Populated, sink: FileSink) -> None:
    anchor(populated, sink)
    anchor(populated, sink)
    sql(populated.url, "DELETE FROM anchor_leaves WHERE idx = 2")
    sql(populated.url, "DELETE FROM anchors WHERE idx = 2")
    assert verify_anchors(populated.store).ok  # the ledger alone cannot tell
    report = verify_anchors(populated.store, sink)
    assert kinds(report) == [("sink", None)]
    assert "anchor 2 (root" in report.problems[0].message
    assert "is in " + sink.name + " but not in the ledger" in report.problems[0].message


def test_a_rewritten_anchor_log_differs_from_the_sink(populated: Populated, sink: FileSink) -> None:
    """The whole cover-up: delete a run, then rebuild the anchor log without it."""
    anchor(populated, sink)
    delete_run(populated.url, populated.approved)
    sql(populated.url, "DELETE FROM anchor_leaves")
    sql(populated.url, "DELETE FROM anchors")
    populated.clock.advance(timedelta(hours=-1))
    write_anchor(populated.store, now=populated.clock())
    chains_intact(populated)
    assert verify_anchors(populated.store).ok  # consistent with itself
    report = verify_anchors(populated.store, sink)
    [problem] = report.problems
    assert problem.kind == "sink" and problem.index == 1
    assert problem.message.startswith(f"anchor 1 differs between the ledger and {sink.name} (")
    assert "root: ledger" in problem.message and "runs: ledger 3, sink 4" in problem.message
    with pytest.raises(StoreError, match="disagree about anchor 1"):
        publish(populated.store, sink)


def test_a_forged_sink_line_is_found(populated: Populated, sink: FileSink) -> None:
    anchor(populated, sink)
    line = json.loads(sink.path.read_text())
    line["root"] = "f" * 64
    sink.path.write_text(json.dumps(line) + "\n")
    report = verify_anchors(populated.store, sink)
    assert [p.kind for p in report.problems] == ["sink", "sink"]
    assert "line 1 (anchor 1) is forged or damaged" in report.problems[0].message
    assert "anchor 1 differs between the ledger and" in report.problems[1].message


def test_a_forged_sink_line_with_a_recomputed_hash_still_differs(
    populated: Populated, sink: FileSink
) -> None:
    anchor(populated, sink)
    good = Anchor.from_dict(json.loads(sink.path.read_text()))
    root = "f" * 64
    forged = Anchor(
        good.index,
        good.at,
        root,
        good.runs,
        good.prev_hash,
        anchor_hash(good.prev_hash, good.index, good.at, root, good.runs),
    )
    sink.path.write_text(json.dumps(forged.to_dict()) + "\n")
    [problem] = verify_anchors(populated.store, sink).problems
    assert problem.kind == "sink" and "differs between the ledger and" in problem.message


def test_an_anchor_inserted_into_the_ledger_is_not_in_the_sink(
    populated: Populated, sink: FileSink
) -> None:
    anchor(populated, sink)
    anchor(populated, sink)
    lines = sink.path.read_text().splitlines()
    sink.path.write_text(lines[1] + "\n")  # as if anchor 1 had never been published
    report = verify_anchors(populated.store, sink)
    assert kinds(report) == [("sink", None)]
    assert "anchor 1 is in the ledger but not in" in report.problems[0].message


def test_anchors_not_yet_published_are_a_note(populated: Populated, sink: FileSink) -> None:
    anchor(populated, sink)
    anchor(populated)
    report = verify_anchors(populated.store, sink)
    assert report.ok
    assert report.notes == [
        f"anchor(s) 2 not in {sink.name} yet (`charter anchor --sink` publishes them)"
    ]
    assert publish(populated.store, sink) == [2]
    assert verify_anchors(populated.store, sink).notes == []


def test_a_malformed_sink_line_is_reported(populated: Populated, sink: FileSink) -> None:
    anchor(populated, sink)
    with sink.path.open("a") as f:
        f.write("{not json\n")
    report = verify_anchors(populated.store, sink)
    assert kinds(report) == [("sink", None)]
    assert f"{sink.name} line 2 is not an anchor" in report.problems[0].message
