"""Checking the ledger: is every run's history exactly what was written, and does every table
that answers live decisions say what the history says?

Two kinds of damage, checked in one pass over each run's events:

* **a broken chain** (:class:`Broken`): an event edited, deleted, reordered or cut off, or a
  run's head (``runs.last_seq``, ``last_hash``) that does not name the chain's last event;
* **a projection that disagrees with the events** (:class:`Mismatch`): the tables the
  runtime reads instead of folding events — the runs row (status, wake-up time, contract,
  policy hash, key, times), ``executed_actions`` (``count()`` reads it), ``reviews``,
  ``model_calls`` and the daily roll-up ``model_spend_daily`` (spend limits read them) — are
  recomputed from the events exactly as the stores project them
  (:mod:`charter.ledger.sqlbase`) and compared field by field. An administrator who edits
  one of those tables changes what policy and budgets see without touching a hash; this is
  where that shows.

What a chain cannot show — a whole run deleted, a tail cut *and* the head row moved back,
a chain re-hashed after an edit — needs something outside the run: the anchors of
:mod:`charter.ledger.anchor`. Signed verdicts are checked by :mod:`charter.ledger.signing`;
both plug into this pass (``signatures``) or run beside it (``charter verify --anchors``).

Tables are read through ``SqlStore.query`` (``?`` placeholders, read-only), a few hundred
runs per statement, so a ledger-wide check costs a handful of queries per chunk of runs plus
each run's events; nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from charter.errors import StoreError
from charter.ledger.chain import GENESIS, event_hash
from charter.ledger.events import (
    ActionCompleted,
    Event,
    ModelCalled,
    ReviewDecided,
    ReviewRequested,
    RunCancelled,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
    RunSubmitted,
    StoredEvent,
    decode,
)
from charter.ledger.sealing import SEALED_KEY
from charter.ledger.store import RawEvent, Store
from charter.primitives import canonical

#: Runs read per statement (an ``IN`` list; SQLite allows 32766 parameters, PostgreSQL 65535).
CHUNK = 400
#: The daily roll-up is a running sum of floats; a different order of additions may differ
#: in the last bits, never by this much.
SPEND_TOLERANCE = 1e-9

#: The status each event that ends a run leaves in its runs row (``charter.runs.state``'s
#: ``TERMINAL_STATUS``; the ledger layer cannot import it, a test keeps the two equal).
ENDED: dict[type[Event], str] = {
    RunRefused: "refused",
    RunCompleted: "completed",
    RunFailed: "failed",
    RunEscalated: "escalated",
    RunCancelled: "cancelled",
}


def status_change(ev: Event) -> tuple[str, str | None] | None:
    """``(status, wake_at)`` an event leaves in the runs row, or ``None`` if it leaves them.

    The runtime sets the row from a batch's last such event (``charter.runs.unit.
    status_after``, and ``People`` for verdicts and cancels), so folding event by event with
    this gives the row's value after any batching.
    """
    ended = ENDED.get(type(ev))
    if ended is not None:
        return ended, None
    if isinstance(ev, ReviewRequested):
        return "waiting", ev.due_at
    if isinstance(ev, ReviewDecided):
        return "queued", None
    return None


class Queryable(Protocol):
    """A store that answers read-only SQL (both SQL stores: ``SqlStore.query``)."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


def queryable(store: Store) -> Queryable:
    """The store as something that answers SQL; a :class:`StoreError` for any other store."""
    if not callable(getattr(store, "query", None)):
        raise StoreError(f"{type(store).__name__} cannot be checked table by table (no query())")
    return store  # type: ignore[return-value]


# -- what is reported ---------------------------------------------------------------------
@dataclass(frozen=True)
class Broken:
    """The first link of a run's chain that does not hold, and why."""

    run_id: str
    seq: int
    problem: str

    def to_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "seq": self.seq, "problem": self.problem}


@dataclass(frozen=True)
class Mismatch:
    """One field of one projection row that is not what the events say.

    ``field`` is ``(row)`` when a whole row is missing (``found`` is ``None``) or has no
    event behind it (``expected`` is ``None``).
    """

    table: str
    key: str
    field: str
    expected: Any
    found: Any

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "key": self.key,
            "field": self.field,
            "expected": self.expected,
            "found": self.found,
        }

    def __str__(self) -> str:
        if self.field == ROW and self.found is None:
            return f"{self.table} {self.key}: row missing; the events say {_show(self.expected)}"
        if self.field == ROW and self.expected is None:
            return f"{self.table} {self.key}: row {_show(self.found)} has no event behind it"
        return (
            f"{self.table} {self.key}: {self.field} is {_show(self.found)}, "
            f"the events say {_show(self.expected)}"
        )


ROW = "(row)"
#: An expected value nothing can be compared with (sealed content without its key).
UNCHECKED: Any = object()


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass
class Verification:
    """What one pass found: runs checked, broken chains, projection mismatches, and the
    problems a signature checker reported (see :mod:`charter.ledger.signing`)."""

    checked: int = 0
    broken: list[Broken] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    signatures: list[Any] = field(default_factory=list)
    #: signed events whose signature held
    signed: int = 0
    #: what could not be checked, and why (not a finding)
    notes: list[str] = field(default_factory=list)
    #: the ledger-wide checks ran (every run was checked: roll-ups, rows without a run)
    whole: bool = False

    @property
    def ok(self) -> bool:
        return not (self.broken or self.mismatches or self.signatures)


class EventChecker(Protocol):
    """Checks a run's intact, decoded events (signatures); returns the problems found and
    counts what held in ``verification``."""

    def __call__(
        self, run_id: str, events: Sequence[StoredEvent], verification: Verification
    ) -> list[Any]: ...


# -- chains -------------------------------------------------------------------------------
def _walk(
    run_id: str, raws: Iterable[RawEvent]
) -> tuple[list[tuple[RawEvent, Any]], Broken | None]:
    """Recompute a run's chain: its events with their parsed payloads, up to the first
    broken link (and that link)."""
    prev = GENESIS
    expected_seq = 1
    out: list[tuple[RawEvent, Any]] = []
    try:
        for raw in raws:
            if raw.seq != expected_seq:
                return out, Broken(
                    run_id,
                    expected_seq,
                    f"event {expected_seq} is missing (next stored is {raw.seq})",
                )
            if raw.prev_hash != prev:
                return out, Broken(
                    run_id, raw.seq, "previous-hash link does not match the event before it"
                )
            try:
                payload = json.loads(raw.data_json)
                data_json = canonical(payload)
            except ValueError:  # JSONDecodeError, or NaN that is not JSON
                return out, Broken(run_id, raw.seq, "payload is not valid JSON")
            if event_hash(prev, run_id, raw.seq, raw.type, raw.at, data_json) != raw.hash:
                return out, Broken(
                    run_id, raw.seq, "content does not match its hash (the event was altered)"
                )
            out.append((raw, payload))
            prev = raw.hash
            expected_seq += 1
    except StoreError as exc:
        return out, Broken(run_id, expected_seq, str(exc))
    return out, None


def _head(
    run_id: str, walked: list[tuple[RawEvent, Any]], last_seq: int, last_hash: str
) -> Broken | None:
    end = len(walked)
    prev = walked[-1][0].hash if walked else GENESIS
    if last_seq != end or last_hash != prev:
        return Broken(
            run_id,
            end + 1,
            f"run head says event {last_seq} but the chain ends at {end} (events deleted?)",
        )
    return None


def verify_run(store: Store, run_id: str) -> Broken | None:
    """Recompute the chain of one run; ``None`` when intact, else the first broken link."""
    walked, broken = _walk(run_id, store.raw_events(run_id))
    if broken is not None:
        return broken
    row = store.get_run(run_id)
    return _head(run_id, walked, row.last_seq, row.last_hash)


def verify(
    store: Store, run_ids: list[str], progress: Callable[[int, int], None] | None = None
) -> tuple[int, list[Broken]]:
    """Verify the chains of several runs; return how many were checked and every broken one.

    ``progress(done, total)``, if given, is called after each run. :func:`verify_ledger`
    checks the projections too.
    """
    broken: list[Broken] = []
    for done, run_id in enumerate(run_ids, 1):
        found = verify_run(store, run_id)
        if found is not None:
            broken.append(found)
        if progress is not None:
            progress(done, len(run_ids))
    return len(run_ids), broken


# -- projections --------------------------------------------------------------------------
@dataclass
class Expected:
    """A run's projection rows as the events say the store must have written them."""

    run: dict[str, Any]
    executed: dict[int, dict[str, Any]]
    reviews: dict[str, dict[str, Any]]
    calls: dict[int, dict[str, Any]]
    contract_name: str


_RUN_FIELDS = (
    "contract",
    "contract_name",
    "policy_hash",
    "status",
    "idempotency_key",
    "created_at",
    "updated_at",
    "wake_at",
)
_REVIEW_FIELDS = (
    "contract",
    "kind",
    "step",
    "action",
    "effect",
    "status",
    "reviewers",
    "reasons",
    "requested_at",
    "due_at",
    "decided_at",
    "decided_by",
    "verdict",
)
_CALL_FIELDS = (
    "step",
    "attempt",
    "contract_name",
    "provider",
    "model",
    "at",
    "prompt_hash",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
)


def expected_projections(
    run_id: str,
    events: Sequence[StoredEvent],
    projected_args: Callable[[Any], Any] = lambda args: args,
) -> Expected:
    """Fold a run's events into the projection rows :mod:`charter.ledger.sqlbase` writes
    for them (``SqlStore._project`` and the runs row of ``create_run``/``append``);
    ``projected_args`` gives the arguments as ``executed_actions`` holds them."""
    first = events[0].event if events else None
    contract = first.contract if isinstance(first, RunSubmitted) else None
    contract_name = contract.rsplit("@", 1)[0] if contract else ""
    status: str = "queued"
    wake_at: str | None = None
    executed: dict[int, dict[str, Any]] = {}
    reviews: dict[str, dict[str, Any]] = {}
    calls: dict[int, dict[str, Any]] = {}
    for stored in events:
        ev = stored.event
        change = status_change(ev)
        if change is not None:
            status, wake_at = change
        if isinstance(ev, ModelCalled):
            calls[stored.seq] = {
                "step": ev.step,
                "attempt": ev.attempt,
                "contract_name": contract_name,
                "provider": ev.provider,
                "model": ev.model,
                "at": stored.at,
                "prompt_hash": ev.prompt_hash,
                "input_tokens": ev.input_tokens,
                "cached_input_tokens": ev.cached_input_tokens or 0,
                "cache_write_tokens": ev.cache_write_tokens or 0,
                "output_tokens": ev.output_tokens,
                "reasoning_tokens": ev.reasoning_tokens or 0,
                "cost_usd": ev.cost_usd,
            }
        elif isinstance(ev, ActionCompleted) and not ev.compensation:
            # ON CONFLICT DO NOTHING: the first completion of a step is the row
            executed.setdefault(
                ev.step,
                {"action": ev.action, "args": projected_args(ev.match_form), "at": ev.completed_at},
            )
        elif isinstance(ev, ReviewRequested):
            reviews[ev.review_id] = {
                "contract": contract,
                "kind": ev.kind,
                "step": ev.step,
                "action": ev.action,
                "effect": ev.effect,
                "status": "pending",
                "reviewers": list(ev.reviewers),
                "reasons": list(ev.reasons),
                "requested_at": ev.requested_at,
                "due_at": ev.due_at,
                "decided_at": None,
                "decided_by": None,
                "verdict": None,
            }
        elif isinstance(ev, RunCancelled):
            for review in reviews.values():
                if review["status"] == "pending":
                    review["status"] = "cancelled"
        elif isinstance(ev, ReviewDecided) and ev.review_id in reviews:
            reviews[ev.review_id].update(
                status="decided", decided_at=ev.decided_at, decided_by=ev.by, verdict=ev.verdict
            )
    run = {
        "contract": contract,
        "contract_name": contract_name,
        "policy_hash": first.policy_hash if isinstance(first, RunSubmitted) else None,
        "status": status,
        "idempotency_key": first.idempotency_key if isinstance(first, RunSubmitted) else None,
        "created_at": events[0].at if events else None,
        "updated_at": events[-1].at if events else None,
        "wake_at": wake_at,
    }
    return Expected(run, executed, reviews, calls, contract_name)


def _json(value: Any) -> Any:
    """A JSON column as a value: SQLite returns its text, PostgreSQL's ``jsonb`` a value."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _same(a: Any, b: Any) -> bool:
    if a is UNCHECKED:
        return True
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        try:
            return canonical(a) == canonical(b)
        except (TypeError, ValueError):
            return False
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


class _Rows:
    """A chunk of runs' projection rows, read with one statement per table."""

    def __init__(self, db: Queryable, run_ids: Sequence[str]) -> None:
        marks = ", ".join("?" * len(run_ids))
        self.runs = {
            r[0]: r
            for r in db.query(
                f"SELECT run_id, {', '.join(_RUN_FIELDS)}, last_seq, last_hash "
                f"FROM runs WHERE run_id IN ({marks})",
                run_ids,
            )
        }
        self.executed: dict[str, dict[int, tuple[Any, ...]]] = {}
        for r in db.query(
            f"SELECT run_id, step, action, args, at FROM executed_actions WHERE run_id IN ({marks})",
            run_ids,
        ):
            self.executed.setdefault(r[0], {})[int(r[1])] = r
        self.reviews: dict[str, dict[str, tuple[Any, ...]]] = {}
        for r in db.query(
            f"SELECT run_id, review_id, {', '.join(_REVIEW_FIELDS)} FROM reviews "
            f"WHERE run_id IN ({marks})",
            run_ids,
        ):
            self.reviews.setdefault(r[0], {})[r[1]] = r
        self.calls: dict[str, dict[int, tuple[Any, ...]]] = {}
        for r in db.query(
            f"SELECT run_id, seq, {', '.join(_CALL_FIELDS)} FROM model_calls "
            f"WHERE run_id IN ({marks})",
            run_ids,
        ):
            self.calls.setdefault(r[0], {})[int(r[1])] = r


def compare_run(run_id: str, expected: Expected, rows: _Rows) -> list[Mismatch]:
    """Every difference between a run's projection rows and what its events say."""
    out: list[Mismatch] = []
    row = rows.runs[run_id]
    for i, name in enumerate(_RUN_FIELDS, 1):
        if not _same(expected.run[name], row[i]):
            out.append(Mismatch("runs", f"run {run_id}", name, expected.run[name], row[i]))

    found_exec = rows.executed.get(run_id, {})
    for step, want in sorted(expected.executed.items()):
        key = f"run {run_id} step {step}"
        got = found_exec.get(step)
        if got is None:
            out.append(Mismatch("executed_actions", key, ROW, want, None))
            continue
        have = {"action": got[2], "args": _json(got[3]), "at": got[4]}
        out.extend(
            Mismatch("executed_actions", key, name, want[name], have[name])
            for name in ("action", "args", "at")
            if not _same(want[name], have[name])
        )
    for step in sorted(set(found_exec) - set(expected.executed)):
        got = found_exec[step]
        extra = {"action": got[2], "args": _json(got[3]), "at": got[4]}
        out.append(Mismatch("executed_actions", f"run {run_id} step {step}", ROW, None, extra))

    found_reviews = rows.reviews.get(run_id, {})
    for review_id, want in sorted(expected.reviews.items()):
        key = f"review {review_id} (run {run_id})"
        got = found_reviews.get(review_id)
        if got is None:
            out.append(Mismatch("reviews", key, ROW, want, None))
            continue
        have = dict(zip(_REVIEW_FIELDS, got[2:], strict=True))
        have["reviewers"] = _json(have["reviewers"])
        have["reasons"] = _json(have["reasons"])
        out.extend(
            Mismatch("reviews", key, name, want[name], have[name])
            for name in _REVIEW_FIELDS
            if not _same(want[name], have[name])
        )
    for review_id in sorted(set(found_reviews) - set(expected.reviews)):
        have = dict(zip(_REVIEW_FIELDS, found_reviews[review_id][2:], strict=True))
        extra = {k: have[k] for k in ("status", "verdict", "decided_by")}
        out.append(Mismatch("reviews", f"review {review_id} (run {run_id})", ROW, None, extra))

    found_calls = rows.calls.get(run_id, {})
    for seq, want in sorted(expected.calls.items()):
        key = f"run {run_id} seq {seq}"
        got = found_calls.get(seq)
        if got is None:
            out.append(Mismatch("model_calls", key, ROW, want, None))
            continue
        have = dict(zip(_CALL_FIELDS, got[2:], strict=True))
        out.extend(
            Mismatch("model_calls", key, name, want[name], have[name])
            for name in _CALL_FIELDS
            if not _same(want[name], have[name])
        )
    for seq in sorted(set(found_calls) - set(expected.calls)):
        have = dict(zip(_CALL_FIELDS, found_calls[seq][2:], strict=True))
        extra = {k: have[k] for k in ("model", "at", "cost_usd")}
        out.append(Mismatch("model_calls", f"run {run_id} seq {seq}", ROW, None, extra))
    return out


def _ledger_wide(db: Queryable, spend: dict[tuple[str, str], tuple[int, float]]) -> list[Mismatch]:
    """Checks that need every run: the daily spend roll-up against every model call the
    events record, and projection rows (or events) of runs that do not exist."""
    out: list[Mismatch] = []
    found = {
        (r[0], r[1]): (int(r[2]), float(r[3]))
        for r in db.query("SELECT contract_name, day, calls, cost_usd FROM model_spend_daily")
    }
    for key in sorted(set(found) | set(spend)):
        label = f"{key[0]} {key[1]}"
        want = spend.get(key)
        have = found.get(key)
        if want is None:
            assert have is not None
            extra = {"calls": have[0], "cost_usd": have[1]}
            out.append(Mismatch("model_spend_daily", label, ROW, None, extra))
            continue
        calls, cost = want
        if have is None:
            out.append(
                Mismatch("model_spend_daily", label, ROW, {"calls": calls, "cost_usd": cost}, None)
            )
            continue
        if have[0] != calls:
            out.append(Mismatch("model_spend_daily", label, "calls", calls, have[0]))
        if abs(have[1] - cost) > SPEND_TOLERANCE * max(1.0, abs(cost)):
            out.append(Mismatch("model_spend_daily", label, "cost_usd", cost, have[1]))
    for table in ("events", "executed_actions", "reviews", "model_calls"):
        for run_id, n in db.query(
            f"SELECT t.run_id, count(*) FROM {table} t LEFT JOIN runs r ON r.run_id = t.run_id "
            "WHERE r.run_id IS NULL GROUP BY t.run_id ORDER BY t.run_id"
        ):
            out.append(
                Mismatch(table, f"run {run_id}", ROW, None, f"{int(n)} row(s) of a run not in runs")
            )
    return out


def verify_ledger(
    store: Store,
    run_ids: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
    *,
    projections: bool = True,
    whole: bool = False,
    check_events: EventChecker | None = None,
) -> Verification:
    """Check the chains of ``run_ids`` and, with ``projections``, every projection row of
    those runs against their events; ``whole`` (``run_ids`` are every run of the ledger)
    adds the ledger-wide checks: the daily spend roll-up and rows of runs that do not exist.

    ``check_events(run_id, events, verification)`` sees each intact run's decoded events
    (signatures). ``progress(done, total)`` is called after each run.
    """
    db = queryable(store) if projections else None
    result = Verification(checked=len(run_ids), whole=whole and projections)
    spend: dict[tuple[str, str], tuple[int, float]] = {}
    done = 0
    for start in range(0, len(run_ids), CHUNK):
        chunk = list(run_ids[start : start + CHUNK])
        rows = _Rows(db, chunk) if db is not None else None
        for run_id in chunk:
            done += 1
            _check_one(store, run_id, rows, result, spend, check_events)
            if progress is not None:
                progress(done, len(run_ids))
    if db is not None and whole:
        result.mismatches.extend(_ledger_wide(db, spend))
    return result


def _opened(
    store: Store, run_id: str, walked: Sequence[tuple[RawEvent, dict[str, Any]]]
) -> tuple[list[StoredEvent], str]:
    """A run's events decoded, sealed content opened; and how the run is sealed: ``""``
    (not sealed), ``"sealed"`` (opened), ``"erased"`` or ``"no key"``."""
    events = []
    sealing = ""
    for raw, payload in walked:
        unreadable: tuple[str, ...] = ()
        reason = ""
        if SEALED_KEY in payload:
            opened = store.open_sealed(run_id, raw.type, payload)
            payload, unreadable, reason = opened.data, opened.unreadable, opened.reason
            sealing = reason or "sealed"
        event = decode(raw.type, payload)
        events.append(
            StoredEvent(run_id, raw.seq, raw.at, event, raw.prev_hash, raw.hash, unreadable, reason)
        )
    return events, sealing


def _args_as_projected(store: Store, sealing: str) -> Callable[[Any], Any]:
    """How ``executed_actions.args`` holds a run's arguments: in clear, blinded (sealed),
    ``{}`` (erased: the blinded values went with the key), or unknown (no key to blind)."""
    if sealing == "sealed":
        return store.projected_args
    if sealing == "erased":
        return lambda _: {}
    if sealing == "no key":
        return lambda _: UNCHECKED
    return lambda args: args


def _check_one(
    store: Store,
    run_id: str,
    rows: _Rows | None,
    result: Verification,
    spend: dict[tuple[str, str], tuple[int, float]],
    check_events: EventChecker | None,
) -> None:
    walked, broken = _walk(run_id, store.raw_events(run_id))
    if broken is None:
        if rows is not None:
            head = rows.runs.get(run_id)
            if head is None:
                broken = Broken(run_id, 0, "the run's row vanished while it was being checked")
            else:
                broken = _head(run_id, walked, head[-2], head[-1])
        else:
            row = store.get_run(run_id)
            broken = _head(run_id, walked, row.last_seq, row.last_hash)
    if broken is not None:
        # a broken chain is reported once; what its projections say of it means nothing
        result.broken.append(broken)
        return
    try:
        events, sealing = _opened(store, run_id, walked)
    except StoreError as exc:  # a wrong key-encryption key is no finding: it is raised
        result.broken.append(Broken(run_id, 0, f"an event cannot be read: {exc}"))
        return
    if sealing == "no key":
        result.notes.append(
            f"run {run_id} is sealed and this process has no key-encryption key: "
            "its executed arguments were not compared"
        )
    if rows is not None:
        expected = expected_projections(run_id, events, _args_as_projected(store, sealing))
        result.mismatches.extend(compare_run(run_id, expected, rows))
        for call in expected.calls.values():
            day = (expected.contract_name, str(call["at"])[:10])
            calls, cost = spend.get(day, (0, 0.0))
            spend[day] = (calls + 1, cost + float(call["cost_usd"]))
    if check_events is not None:
        result.signatures.extend(check_events(run_id, events, result))
