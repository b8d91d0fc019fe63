"""Anchors: what the ledger looked like at an instant, kept where one run's chain cannot reach.

Each run's hash chain proves its own history, not that the run still exists, nor that its
chain was not cut and its head row moved back, nor that an administrator did not rewrite it
and recompute every hash. An **anchor** closes that gap: a Merkle root over the head of
every run (``run_id``, last seq, last hash), taken periodically (``charter anchor``, e.g.
hourly from cron) and kept in an append-only log in which each anchor is chained to the one
before (index, time, root, run count, previous anchor's hash, its own hash). A copy of each
anchor goes to an :class:`AnchorSink` outside the database — a file on another volume
(:class:`FileSink`), later an HTTP endpoint or a transparency log — so that rewriting the
ledger's anchors as well shows as a difference from the sink.

``charter verify --anchors`` recomputes every anchor from its leaves and checks each leaf
against the ledger now: a run deleted since an anchor, a run whose anchored head is no
longer in its chain (tail cut), a run whose event at the anchored position has another hash
(re-hashed after an edit), a run inserted later with a backdated time, anchors removed,
reordered or altered, and anchors in the sink missing from the ledger or different there.
Runs created after an anchor are simply not covered by it.

**Size.** An anchor stores only the leaves that changed since the previous anchor (runs that
are new or moved on, and a ``seq 0`` tombstone for a run that is gone), in
``anchor_leaves``; the full set of an anchor is the fold of every anchor's changes up to it.
Hourly anchors over a million runs therefore cost one row per run each time it moves
between anchors — roughly its number of active hours, usually one or two — rather than a
million rows an hour (8.8 billion a year). The Merkle tree keeps each run at a fixed
position (the order in which runs were first anchored, then by id), so it is updated in
place: recomputing every anchor's root costs about ``log2(runs)`` hashes per stored leaf.

Merkle tree: RFC 6962's — a leaf is ``SHA-256(0x00 ‖ canonical [run_id, seq, hash])`` (a
gone run: ``[run_id, 0, null]``), a node ``SHA-256(0x01 ‖ left ‖ right)``, an odd node
promoted unchanged; the empty tree's root is ``SHA-256("")``. An anchor's hash is
``SHA-256(prev_hash ‖ "\\n" ‖ canonical [index, at, root, runs])``, the first anchor's
previous hash 64 zeros.

Reads go through ``SqlStore.query``; the one write (an anchor and its leaves, in one
transaction, refused if another anchor was written meanwhile) uses the store's transaction
hook.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from charter.errors import ConflictError, StoreError
from charter.ledger.sqlbase import Cursor, SqlStore
from charter.ledger.store import Store
from charter.ledger.verify import Queryable, queryable
from charter.primitives import canonical, format_time, parse_time

GENESIS = "0" * 64
#: Leaves read per statement when folding the anchors.
PAGE = 20_000
#: A run created this long before an anchor and not covered by it was inserted afterwards
#: (a run created during the anchor's read may commit just after it: a few seconds).
BACKDATE_GRACE = timedelta(minutes=10)
_EMPTY = hashlib.sha256(b"").digest()


# -- the format ---------------------------------------------------------------------------
def leaf_hash(run_id: str, seq: int, head: str) -> bytes:
    """A run's leaf: its head at the anchor, or (``seq`` 0) that it was gone."""
    data = canonical([run_id, seq, head if seq else None]).encode("utf-8")
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def anchor_hash(prev_hash: str, index: int, at: str, root: str, runs: int) -> str:
    h = hashlib.sha256()
    h.update(prev_hash.encode("ascii"))
    h.update(b"\n")
    h.update(canonical([index, at, root, runs]).encode("utf-8"))
    return h.hexdigest()


@dataclass(frozen=True)
class Anchor:
    """One entry of the anchor log, as the ledger and a sink keep it."""

    index: int
    at: str
    root: str
    runs: int
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at": self.at,
            "root": self.root,
            "runs": self.runs,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Anchor:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            anchor = cls(
                int(data["index"]),
                str(data["at"]),
                str(data["root"]),
                int(data["runs"]),
                str(data["prev_hash"]),
                str(data["hash"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an anchor ({exc!r} missing or malformed)") from None
        return anchor

    @property
    def valid(self) -> bool:
        """Its hash is the hash of its content (it says nothing of the anchors around it)."""
        return self.hash == anchor_hash(self.prev_hash, self.index, self.at, self.root, self.runs)


class MerkleTree:
    """Leaves at fixed positions, replaced or appended; the root is recomputed lazily from
    the changed leaves up (``log2(n)`` hashes per changed leaf)."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]
        self._dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self.levels[0])

    def set(self, position: int, leaf: bytes) -> None:
        leaves = self.levels[0]
        if position == len(leaves):
            leaves.append(leaf)
        elif position < len(leaves):
            leaves[position] = leaf
        else:
            raise IndexError(f"leaf {position} of a tree of {len(leaves)}")
        self._dirty.add(position)

    def root(self) -> str:
        dirty, self._dirty = self._dirty, set()
        level = 0
        while len(self.levels[level]) > 1:
            if level + 1 == len(self.levels):
                self.levels.append([])
            below, above = self.levels[level], self.levels[level + 1]
            parents = sorted({p // 2 for p in dirty})
            for p in parents:
                left = below[2 * p]
                node = _node(left, below[2 * p + 1]) if 2 * p + 1 < len(below) else left
                if p == len(above):
                    above.append(node)
                else:
                    above[p] = node
            dirty = set(parents)
            level += 1
        top = self.levels[level]
        return (top[0] if top else _EMPTY).hex()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """The root of a tree of these leaves, in this order."""
    tree = MerkleTree()
    for i, leaf in enumerate(leaves):
        tree.set(i, leaf)
    return tree.root()


# -- sinks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SinkEntry:
    """One entry read back from a sink: an anchor, or why the entry is not one."""

    where: str  # e.g. "line 3"
    anchor: Anchor | None
    problem: str = ""


class AnchorSink(ABC):
    """Somewhere outside the database that keeps a copy of every anchor, append-only.

    ``publish`` must not return before the anchor is durable there; ``entries`` reads every
    copy back, in order, for ``charter verify --anchors --sink``. Implemented: a file
    (:class:`FileSink`); an HTTP endpoint or a transparency log would implement the same two
    methods.
    """

    name: str

    @abstractmethod
    def publish(self, anchor: Anchor) -> None: ...

    @abstractmethod
    def entries(self) -> list[SinkEntry]: ...


class FileSink(AnchorSink):
    """Anchors as JSON lines appended to a file (put it on another volume, or one the
    database's administrators cannot write; a write-once or append-only mount is best)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)

    def publish(self, anchor: Anchor) -> None:
        line = canonical(anchor.to_dict()) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StoreError(f"cannot append anchor {anchor.index} to {self.name}: {exc}") from None

    def entries(self) -> list[SinkEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read the anchor sink {self.name}: {exc}") from None
        out: list[SinkEntry] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(SinkEntry(f"line {n}", Anchor.from_dict(json.loads(line))))
            except ValueError as exc:
                out.append(SinkEntry(f"line {n}", None, str(exc)))
        return out


# -- the anchors in the ledger --------------------------------------------------------------
def _anchors(db: Queryable) -> list[Anchor]:
    return [
        Anchor(int(r[0]), r[1], r[2], int(r[3]), r[4], r[5])
        for r in db.query("SELECT idx, at, root, runs, prev_hash, hash FROM anchors ORDER BY idx")
    ]


def _leaf_pages(db: Queryable, *, current: bool) -> Iterator[list[tuple[Any, ...]]]:
    """Every stored leaf in (anchor, run) order, a page at a time; with ``current``, each
    with the hash of the event now at the anchored position and the run's head now."""
    columns = "l.idx, l.run_id, l.seq, l.hash"
    joins = ""
    if current:
        columns += ", e.hash, r.last_seq"
        joins = (
            " LEFT JOIN events e ON e.run_id = l.run_id AND e.seq = l.seq"
            " LEFT JOIN runs r ON r.run_id = l.run_id"
        )
    after: tuple[int, str] = (0, "")
    while True:
        rows = db.query(
            f"SELECT {columns} FROM anchor_leaves l{joins} "
            "WHERE (l.idx, l.run_id) > (?, ?) ORDER BY l.idx, l.run_id LIMIT ?",
            (after[0], after[1], PAGE),
        )
        if not rows:
            return
        yield rows
        if len(rows) < PAGE:
            return
        after = (int(rows[-1][0]), str(rows[-1][1]))


@dataclass
class Fold:
    """The full leaf set as of the anchors applied so far."""

    tree: MerkleTree = field(default_factory=MerkleTree)
    position: dict[str, int] = field(default_factory=dict)
    head: dict[str, tuple[int, str]] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)  # run -> first anchor covering it
    present: int = 0

    def apply(self, index: int, leaves: Sequence[tuple[str, int, str]]) -> None:
        """One anchor's changed leaves, sorted by run id."""
        for run_id, seq, head in leaves:
            old = self.head.get(run_id)
            if old is None:
                self.position[run_id] = len(self.position)
            elif old[0] > 0:
                self.present -= 1
            if seq > 0:
                self.present += 1
                self.first.setdefault(run_id, index)
            self.head[run_id] = (seq, head)
            self.tree.set(self.position[run_id], leaf_hash(run_id, seq, head))

    def root(self) -> str:
        return self.tree.root()


def _fold(db: Queryable) -> Fold:
    fold = Fold()
    batch: list[tuple[str, int, str]] = []
    index = 0
    for page in _leaf_pages(db, current=False):
        for idx, run_id, seq, head in page:
            if int(idx) != index and batch:
                fold.apply(index, batch)
                batch = []
            index = int(idx)
            batch.append((str(run_id), int(seq), str(head)))
    if batch:
        fold.apply(index, batch)
    return fold


@dataclass(frozen=True)
class Anchored:
    """What ``charter anchor`` wrote, and what it saw of runs anchored before."""

    anchor: Anchor
    leaves: int  # leaf rows written (runs new or moved on since the previous anchor)
    #: runs an earlier anchor covered that are gone now
    gone: list[str]
    #: (run, anchored seq, seq now) for runs whose chain is now shorter than anchored
    shorter: list[tuple[str, int, int]]


def write_anchor(store: Store, *, now: datetime | None = None) -> Anchored:
    """Anchor the head of every run now: one row in ``anchors`` and the changed leaves."""
    if not isinstance(store, SqlStore):
        raise StoreError(f"{type(store).__name__} cannot keep anchors")
    db = queryable(store)
    at = format_time(now or datetime.now(UTC))
    anchors = _anchors(db)
    last = anchors[-1] if anchors else None
    index = (last.index if last else 0) + 1
    fold = _fold(db)
    heads = {
        str(r[0]): (int(r[1]), str(r[2]))
        for r in db.query("SELECT run_id, last_seq, last_hash FROM runs")
    }
    leaves: list[tuple[str, int, str]] = []
    gone: list[str] = []
    shorter: list[tuple[str, int, int]] = []
    for run_id in sorted(set(heads) | set(fold.head)):
        now_head = heads.get(run_id)
        before = fold.head.get(run_id)
        if now_head is None:
            if before is not None and before[0] > 0:
                gone.append(run_id)
                leaves.append((run_id, 0, ""))
            continue
        if before is not None and now_head[0] < before[0]:
            shorter.append((run_id, before[0], now_head[0]))
        if before != now_head:
            leaves.append((run_id, *now_head))
    fold.apply(index, leaves)
    root = fold.root()
    prev = last.hash if last else GENESIS
    anchor = Anchor(
        index, at, root, fold.present, prev, anchor_hash(prev, index, at, root, fold.present)
    )

    def write(cur: Cursor) -> None:
        store._lock(cur, "anchor:log")  # PostgreSQL: one anchor writer at a time
        latest = cur.one("SELECT max(idx) FROM anchors")
        if (latest[0] if latest else None) != (last.index if last else None):
            raise ConflictError(
                f"another anchor was written meanwhile (anchor {latest[0]}); run `charter anchor` again"
            )
        cur.run(
            "INSERT INTO anchors (idx, at, root, runs, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
            (anchor.index, anchor.at, anchor.root, anchor.runs, anchor.prev_hash, anchor.hash),
        )
        if leaves:
            cur.many(
                "INSERT INTO anchor_leaves (idx, run_id, seq, hash) VALUES (?, ?, ?, ?)",
                [(index, *leaf) for leaf in leaves],
            )

    store._transaction(write)
    return Anchored(anchor, len(leaves), gone, shorter)


def publish(store: Store, sink: AnchorSink) -> list[int]:
    """Copy to ``sink`` every anchor of the ledger newer than the sink's newest (normally
    the one just written; after a failed publish, those it missed). Refuses when the sink's
    newest anchor is not the ledger's: that is for ``charter verify --anchors`` to explain."""
    anchors = {a.index: a for a in _anchors(queryable(store))}
    entries = [e.anchor for e in sink.entries() if e.anchor is not None]
    tip = max((a.index for a in entries), default=0)
    if tip:
        theirs = next(a for a in reversed(entries) if a.index == tip)
        if anchors.get(tip) != theirs:
            raise StoreError(
                f"the sink {sink.name} and the ledger disagree about anchor {tip}; nothing "
                "published: run `charter verify --anchors --sink` to see why"
            )
    published = []
    for index in sorted(i for i in anchors if i > tip):
        sink.publish(anchors[index])
        published.append(index)
    return published


# -- checking -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnchorProblem:
    """Something the anchors show: ``kind`` is one of ``chain`` (the anchor log itself),
    ``root`` (leaves that do not give their anchor's root), ``deleted``, ``cut``,
    ``rehashed``, ``missing`` (an anchored event gone from an otherwise long enough chain),
    ``backdated``, ``sink`` (the sink and the ledger disagree)."""

    kind: str
    message: str
    index: int | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "index": self.index,
            "run_id": self.run_id,
            "message": self.message,
        }


@dataclass
class AnchorReport:
    anchors: int = 0
    #: runs covered by at least one anchor
    covered: int = 0
    #: leaf rows checked against the ledger now
    leaves: int = 0
    problems: list[AnchorProblem] = field(default_factory=list)
    #: facts that are not damage (anchors not published to the sink yet)
    notes: list[str] = field(default_factory=list)
    sink_entries: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchors": self.anchors,
            "covered_runs": self.covered,
            "leaves": self.leaves,
            "sink_entries": self.sink_entries,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


def verify_anchors(store: Store, sink: AnchorSink | None = None) -> AnchorReport:
    """Check the anchor log, every anchor's root, every anchored head against the ledger
    now, and (with ``sink``) the ledger's anchors against the sink's copies."""
    db = queryable(store)
    report = AnchorReport()
    anchors = _anchors(db)
    report.anchors = len(anchors)
    _check_log(anchors, report)
    by_index = {a.index: a for a in anchors}
    fold = Fold()
    flagged: set[str] = set()

    def close(index: int, batch: list[tuple[str, int, str]]) -> None:
        fold.apply(index, batch)
        anchor = by_index.get(index)
        if anchor is None:
            if batch:
                report.problems.append(
                    AnchorProblem(
                        "chain",
                        f"anchor {index} is missing but {len(batch)} of its leaves remain "
                        "(the anchor was removed)",
                        index,
                    )
                )
            return
        root = fold.root()
        if root != anchor.root or fold.present != anchor.runs:
            report.problems.append(
                AnchorProblem(
                    "root",
                    f"anchor {index}: its stored leaves give root {root[:16]}… over "
                    f"{fold.present} run(s), the anchor says {anchor.root[:16]}… over "
                    f"{anchor.runs}: leaves of anchor {index} or earlier were edited or removed",
                    index,
                )
            )

    pending = deque(sorted(by_index))

    def close_up_to(index: int, batch: list[tuple[str, int, str]] | None) -> None:
        """Close every anchor before ``index`` (they changed no leaf), then ``index`` with
        its ``batch`` of leaves (``None``: no more leaves; close every anchor left)."""
        while pending and pending[0] < index:
            close(pending.popleft(), [])
        if batch is not None:
            close(index, batch)
            if pending and pending[0] == index:
                pending.popleft()

    current = 0
    batch: list[tuple[str, int, str]] = []
    for page in _leaf_pages(db, current=True):
        for idx, run_id, seq, head, now_hash, last_seq in page:
            idx, seq, run = int(idx), int(seq), str(run_id)
            if idx != current:
                if current:
                    close_up_to(current, batch)
                close_up_to(idx, None)
                current, batch = idx, []
            batch.append((run, seq, str(head)))
            report.leaves += 1
            if seq > 0 and run not in flagged:
                problem = _leaf_problem(idx, run, seq, str(head), now_hash, last_seq)
                if problem is not None:
                    flagged.add(run)
                    report.problems.append(problem)
    if current:
        close_up_to(current, batch)
    close_up_to(2**62, None)
    report.covered = len(fold.first)
    _check_backdated(db, anchors, fold, report)
    if sink is not None:
        _check_sink(anchors, sink, report)
    return report


def _leaf_problem(
    index: int, run_id: str, seq: int, head: str, now_hash: Any, last_seq: Any
) -> AnchorProblem | None:
    if now_hash == head:
        return None
    if last_seq is None:
        if now_hash is None:
            return AnchorProblem(
                "deleted",
                f"run {run_id} was deleted: anchor {index} covered it at event {seq} "
                f"(hash {head[:16]}…), the ledger has no such run now",
                index,
                run_id,
            )
        return AnchorProblem(
            "deleted",
            f"run {run_id}'s row in runs was deleted (its events remain); anchor {index} "
            f"covered it at event {seq}",
            index,
            run_id,
        )
    if now_hash is None and int(last_seq) < seq:
        return AnchorProblem(
            "cut",
            f"run {run_id} was cut: anchor {index} covered it up to event {seq} "
            f"(hash {head[:16]}…), its chain now ends at event {last_seq}",
            index,
            run_id,
        )
    if now_hash is None:
        return AnchorProblem(
            "missing",
            f"run {run_id}: event {seq}, covered by anchor {index}, is missing",
            index,
            run_id,
        )
    return AnchorProblem(
        "rehashed",
        f"run {run_id} was rewritten: anchor {index} covered event {seq} with hash "
        f"{head[:16]}…, the ledger now has {str(now_hash)[:16]}… (events up to {seq} were "
        "edited and the chain re-hashed)",
        index,
        run_id,
    )


def _check_log(anchors: list[Anchor], report: AnchorReport) -> None:
    """The anchor log alone: consecutive indexes, each linked to and dated after the last."""
    prev: Anchor | None = None
    for a in anchors:
        expected = (prev.index if prev else 0) + 1
        if a.index != expected:
            missing = f"{expected}" if a.index == expected + 1 else f"{expected}-{a.index - 1}"
            report.problems.append(
                AnchorProblem(
                    "chain", f"anchor(s) {missing} missing from the ledger (removed)", a.index
                )
            )
        elif a.prev_hash != (prev.hash if prev else GENESIS):
            report.problems.append(
                AnchorProblem(
                    "chain",
                    f"anchor {a.index} does not link to anchor {expected - 1} "
                    "(anchors removed, reordered or rewritten)",
                    a.index,
                )
            )
        if not a.valid:
            report.problems.append(
                AnchorProblem(
                    "chain",
                    f"anchor {a.index} was altered: its hash does not match its content",
                    a.index,
                )
            )
        if prev is not None and a.at < prev.at:
            report.problems.append(
                AnchorProblem(
                    "chain",
                    f"anchor {a.index} is dated before anchor {prev.index} (reordered)",
                    a.index,
                )
            )
        prev = a


def _check_backdated(
    db: Queryable, anchors: list[Anchor], fold: Fold, report: AnchorReport
) -> None:
    """A run submitted well before an anchor that the anchor does not cover was put into
    the ledger afterwards, with a time it did not have."""
    if not anchors:
        return
    # the first anchor (lowest index) taken more than the grace after each instant
    times: list[datetime] = []
    earliest: list[int] = []
    for a in sorted(anchors, key=lambda a: (a.at, a.index)):
        try:
            times.append(parse_time(a.at) - BACKDATE_GRACE)
        except ValueError:
            continue
        earliest.append(a.index)
    for i in range(len(earliest) - 2, -1, -1):
        earliest[i] = min(earliest[i], earliest[i + 1])
    for run_id, created_at in db.query("SELECT run_id, created_at FROM runs"):
        try:
            created = parse_time(str(created_at))
        except ValueError:
            continue
        at = bisect.bisect_right(times, created)
        if at == len(times):
            continue
        should = earliest[at]
        first = fold.first.get(str(run_id))
        if first is None or first > should:
            report.problems.append(
                AnchorProblem(
                    "backdated",
                    f"run {run_id} says it was submitted at {created_at}, before anchor {should}, "
                    f"which does not cover it: it was put into the ledger later",
                    should,
                    str(run_id),
                )
            )


def _check_sink(anchors: list[Anchor], sink: AnchorSink, report: AnchorReport) -> None:
    entries = sink.entries()
    report.sink_entries = len(entries)
    ours = {a.index: a for a in anchors}
    theirs: dict[int, Anchor] = {}
    for e in entries:
        if e.anchor is None:
            report.problems.append(
                AnchorProblem("sink", f"{sink.name} {e.where} is not an anchor: {e.problem}")
            )
            continue
        a = e.anchor
        if not a.valid:
            report.problems.append(
                AnchorProblem(
                    "sink",
                    f"{sink.name} {e.where} (anchor {a.index}) is forged or damaged: its hash "
                    "does not match its content",
                    a.index,
                )
            )
        if a.index in theirs and theirs[a.index] != a:
            report.problems.append(
                AnchorProblem(
                    "sink", f"{sink.name} has two different anchors {a.index} ({e.where})", a.index
                )
            )
        theirs.setdefault(a.index, a)
    for index, a in sorted(theirs.items()):
        mine = ours.get(index)
        if mine is None:
            report.problems.append(
                AnchorProblem(
                    "sink",
                    f"anchor {index} (root {a.root[:16]}…, {a.at}) is in {sink.name} but not "
                    "in the ledger: it was removed from the ledger",
                    index,
                )
            )
        elif mine != a:
            fields = [
                f"{k}: ledger {str(v)[:16]}, sink {str(a.to_dict()[k])[:16]}"
                for k, v in mine.to_dict().items()
                if a.to_dict()[k] != v
            ]
            report.problems.append(
                AnchorProblem(
                    "sink",
                    f"anchor {index} differs between the ledger and {sink.name} ("
                    + "; ".join(fields)
                    + ")",
                    index,
                )
            )
    tip = max(theirs, default=0)
    for index in sorted(set(ours) - set(theirs)):
        if index < tip:
            report.problems.append(
                AnchorProblem(
                    "sink",
                    f"anchor {index} is in the ledger but not in {sink.name}, which has later "
                    "anchors: it was inserted into the ledger (or the sink lost it)",
                    index,
                )
            )
    unpublished = sorted(i for i in ours if i > tip)
    if unpublished:
        span = (
            f"{unpublished[0]}" if len(unpublished) == 1 else f"{unpublished[0]}-{unpublished[-1]}"
        )
        report.notes.append(
            f"anchor(s) {span} not in {sink.name} yet (`charter anchor --sink` publishes them)"
        )
