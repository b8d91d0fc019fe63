"""The ledger in SQL, written once for SQLite and PostgreSQL.

Every statement — appends and their projections, claims, leases, rate slots, reads — is
here, with ``?`` placeholders (a driver that wants ``%s`` has them translated by
:class:`Cursor`; no shared statement contains a literal ``?`` or ``%``). What differs
between the two databases is kept to small hooks a store overrides:

* :meth:`SqlStore._transaction` — how a write transaction is opened, committed and retried
  (SQLite: ``BEGIN IMMEDIATE`` on one file; PostgreSQL: a pooled connection, retried when
  nothing can have been applied twice);
* :attr:`SqlStore.LOCK_ROW` / :attr:`SqlStore.SKIP_LOCKED` — row locks (PostgreSQL locks the
  run it appends to and skips runs others are claiming; SQLite's ``BEGIN IMMEDIATE``
  already serialises writers);
* :meth:`SqlStore._lock` — named locks for limits that hold across workers (PostgreSQL
  advisory locks; nothing on SQLite, for the same reason);
* :meth:`SqlStore._notify` — waking idle workers (PostgreSQL ``NOTIFY``);
* :attr:`SqlStore.JSON_PARAM` and :meth:`SqlStore._match_arg` — the JSON column of executed
  actions and how ``count()`` compares one argument in it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from charter import jsontext
from charter.errors import ConfigurationError, ConflictError, NotFoundError, StoreError
from charter.ledger.chain import GENESIS, event_hash
from charter.ledger.events import (
    ActionCompleted,
    Event,
    ModelCalled,
    ReviewDecided,
    ReviewRequested,
    RunCancelled,
    StoredEvent,
    decode,
)
from charter.ledger.migrations import MIGRATIONS
from charter.ledger.sealing import (
    INDEX_SUBJECT,
    KEK_ENV,
    KEK_FILE_ENV,
    SEALED,
    SEALED_KEY,
    KeyEncryptionKey,
    Unsealed,
    blind,
    blind_args,
    new_data_key,
    seal,
    seal_erased,
    unseal,
)
from charter.ledger.store import _UNSET, RawEvent, ReviewRow, RunRow, Store, check_schema_version
from charter.primitives import canonical, format_time

T = TypeVar("T")

RUN_COLUMNS = (
    "run_id, contract, contract_name, policy_hash, status, idempotency_key, created_at, "
    "updated_at, wake_at, lease_owner, lease_expires, epoch, last_seq, last_hash"
)
REVIEW_COLUMNS = (
    "review_id, run_id, contract, kind, step, action, effect, status, reviewers, reasons, "
    "requested_at, due_at, decided_at, decided_by, verdict"
)


def encode_events(
    run_id: str,
    events: Sequence[Event],
    seal: Callable[[Event, dict[str, Any]], dict[str, Any]] | None = None,
) -> list[tuple[Event, str]]:
    """Each event with its canonical JSON, refusing before any write what a store cannot hold.

    Both stores call this first, so they accept and refuse exactly the same events: the
    payload must be JSON text (no NaN, no lone surrogates) and the fields projected into
    plain columns (executed actions' arguments, names) must not contain NUL, which
    PostgreSQL cannot store. The runtime validates at its boundaries; this is the last line.
    ``seal`` turns an event's fields into what is stored (content sealed, see
    :mod:`charter.ledger.sealing`); the chain then covers the sealed form.
    """
    out: list[tuple[Event, str]] = []
    for ev in events:
        projected: Any = None
        if isinstance(ev, ActionCompleted):
            projected = ev.match_form
        elif isinstance(ev, ReviewDecided):
            projected = [ev.by, ev.verdict]
        elif isinstance(ev, ModelCalled):
            projected = [ev.provider, ev.model, ev.prompt_hash]
        found = jsontext.problems(projected, ev.TYPE) if projected is not None else []
        try:
            data = ev.to_data()
            text = canonical(seal(ev, data) if seal is not None else data)
            text.encode("utf-8")
        except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
            found.append(f"{ev.TYPE}: {exc}")
        if found:
            raise StoreError(
                f"run {run_id}: refused to record an event that is not storable JSON text: "
                + "; ".join(found)
            )
        out.append((ev, text))
    return out


def run_row(row: Sequence[Any]) -> RunRow:
    return RunRow(*row)


def review_row(row: Sequence[Any]) -> ReviewRow:
    values = list(row)
    values[8] = json.loads(values[8])
    values[9] = json.loads(values[9])
    return ReviewRow(*values)


class Cursor:
    """A write transaction's cursor, taking ``?`` placeholders whatever the driver wants."""

    def __init__(self, raw: Any, *, pyformat: bool = False) -> None:
        self.raw = raw
        self._pyformat = pyformat

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pyformat else sql

    def run(self, sql: str, params: Sequence[Any] | None = ()) -> int:
        """Execute one statement; the number of rows it changed. ``params=None``: a statement
        taken as written, placeholders and ``%`` included (DDL)."""
        if params is None:
            self.raw.execute(sql)
        else:
            self.raw.execute(self._sql(sql), params)
        return int(self.raw.rowcount)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.raw.execute(self._sql(sql), params)
        return self.raw.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.raw.execute(self._sql(sql), params)
        return list(self.raw.fetchall())

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.raw.executemany(self._sql(sql), rows)


_MIDNIGHT = "T00:00:00.000000Z"
#: Runs a worker may claim now (``?`` twice: now). Written so that PostgreSQL's partial
#: index of queued and waiting runs answers it.
_RUNNABLE = (
    "status IN ('queued', 'waiting') "
    "AND (status = 'queued' OR (wake_at IS NOT NULL AND wake_at <= ?)) "
    "AND (lease_expires IS NULL OR lease_expires < ?)"
)


def apply_migrations(cur: Cursor, dialect: str, where: str) -> None:
    """Bring the ledger to this code's schema, in the caller's transaction.

    Each migration missing from ``charter_migrations`` runs in order (``dialect`` picks its
    ``sqlite`` or ``postgres`` statements) and is recorded; a ledger newer than the code is
    refused before anything changes.
    """
    cur.run(
        "CREATE TABLE IF NOT EXISTS charter_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        None,
    )
    done = {r[0] for r in cur.all("SELECT version FROM charter_migrations")}
    check_schema_version(max(done, default=0), where, older=True)
    applied_at = format_time(datetime.now(UTC))
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for statement in m.sqlite if dialect == "sqlite" else m.postgres:
            cur.run(statement, None)
        cur.run("INSERT INTO charter_migrations VALUES (?, ?, ?)", (m.version, m.name, applied_at))


class SqlStore(Store):
    """A ledger in a SQL database: every statement, with the dialect's hooks left open."""

    #: appended to the SELECT that reads a run's head before appending to it
    LOCK_ROW = ""
    #: appended to the claim's choice of run, so concurrent claimers skip each other's
    SKIP_LOCKED = ""
    #: the placeholder of the executed actions' JSON argument column
    JSON_PARAM = "?"

    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read-only statement with ``?`` placeholders and return its rows."""

    @abstractmethod
    def _transaction(
        self, fn: Callable[[Cursor], T], *, repeatable: bool = False, single: bool = False
    ) -> T:
        """Run ``fn`` in one write transaction and return its result.

        ``repeatable``: running ``fn`` again after an unanswered ``COMMIT`` is harmless (it
        detects its own earlier success or applies nothing new). ``single``: ``fn`` runs
        one statement, which may be its own transaction.
        """

    def _lock(self, cur: Cursor, *names: str) -> None:
        """Hold named locks until the transaction ends (limits shared by all workers)."""

    def _notify(self, cur: Cursor) -> None:
        """Tell idle workers, when the transaction commits, that a run became runnable."""

    @abstractmethod
    def _match_arg(self, key: str, value: Any) -> tuple[str, list[Any]]:
        """The condition (and its parameters) that an executed action's argument ``key``
        equals ``value``, as SQLite compares JSON values (see ``count_executed``)."""

    # -- contracts -------------------------------------------------------------------
    def save_bundle(self, policy_hash: str, ref: str, bundle: Mapping[str, Any]) -> None:
        text = canonical(bundle)
        self._transaction(
            lambda cur: cur.run(
                "INSERT INTO contracts (policy_hash, ref, bundle) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (policy_hash, ref, text),
            ),
            repeatable=True,
            single=True,
        )

    # -- runs and events -------------------------------------------------------------
    def _store_payload(self, cur: Cursor, data_json: str) -> str:
        """The payload as stored: inline, or over the cap a reference to a blob."""
        if len(data_json) <= self.payload_cap:
            return data_json
        sha = hashlib.sha256(data_json.encode("utf-8")).hexdigest()
        cur.run(
            "INSERT INTO blobs (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (sha, len(data_json), data_json),
        )
        return canonical({"$blob": sha, "size": len(data_json)})

    def create_run(
        self,
        run_id: str,
        *,
        contract: str,
        contract_name: str,
        policy_hash: str,
        idempotency_key: str | None,
        event: Event,
        at: str,
        seal_subject: str | None = None,
    ) -> tuple[str, bool]:
        key_id = None
        if seal_subject is not None and self.kek is not None:
            key_id = self._subject_key(seal_subject)
            self._run_keys[run_id] = key_id
        [(_, data_json)] = encode_events(run_id, [event], self._sealer(run_id, key_id))
        h = event_hash(GENESIS, run_id, 1, event.TYPE, at, data_json)

        def fn(cur: Cursor) -> tuple[str, bool]:
            created = cur.one(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES "
                "(?, ?, ?, ?, 'queued', ?, ?, ?, NULL, NULL, NULL, 0, 1, ?) "
                "ON CONFLICT DO NOTHING RETURNING run_id",
                (run_id, contract, contract_name, policy_hash, idempotency_key, at, at, h),
            )
            if created is None:
                # the key is known (or this very run was created by an earlier attempt whose
                # COMMIT went unanswered: run ids are random, so a clash is that attempt)
                row = cur.one(
                    "SELECT run_id FROM runs WHERE run_id = ? OR idempotency_key = ?",
                    (run_id, idempotency_key),
                )
                if row is None:  # pragma: no cover - the conflicting row vanished
                    raise StoreError(f"could not create run {run_id}")
                return str(row[0]), row[0] == run_id
            cur.run(
                "INSERT INTO events (run_id, seq, type, at, data, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, 1, event.TYPE, at, self._store_payload(cur, data_json), GENESIS, h),
            )
            if key_id is not None:
                cur.run("INSERT INTO run_keys (run_id, key_id) VALUES (?, ?)", (run_id, key_id))
            self._notify(cur)
            return run_id, True

        return self._transaction(fn, repeatable=True)

    def append(
        self,
        run_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int,
        at: str,
        epoch: int | None = None,
        status: str | None = None,
        wake_at: str | None = _UNSET,
    ) -> list[StoredEvent]:
        key_id = self._run_key(run_id)
        encoded = encode_events(run_id, events, self._sealer(run_id, key_id))

        def fn(cur: Cursor) -> list[StoredEvent]:
            row = cur.one(
                "SELECT last_seq, last_hash, epoch, contract, contract_name FROM runs "
                f"WHERE run_id = ?{self.LOCK_ROW}",
                (run_id,),
            )
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            last_seq, prev, current_epoch, contract, contract_name = row
            if last_seq != expected_seq:
                raise ConflictError(
                    f"run {run_id} moved on (at event {last_seq}, expected {expected_seq})"
                )
            if epoch is not None and current_epoch != epoch:
                raise ConflictError(
                    f"lease on run {run_id} was taken over (epoch {current_epoch}, ours {epoch})"
                )
            stored: list[StoredEvent] = []
            rows = []
            seq = last_seq
            for ev, data_json in encoded:
                seq += 1
                h = event_hash(prev, run_id, seq, ev.TYPE, at, data_json)
                rows.append(
                    (run_id, seq, ev.TYPE, at, self._store_payload(cur, data_json), prev, h)
                )
                stored.append(StoredEvent(run_id, seq, at, ev, prev, h))
                prev = h
            cur.many(
                "INSERT INTO events (run_id, seq, type, at, data, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for s in stored:
                self._project(cur, s, contract, contract_name, sealed=key_id is not None)
            sets = ["last_seq = ?", "last_hash = ?", "updated_at = ?"]
            params: list[Any] = [seq, prev, at]
            if status is not None:
                sets.append("status = ?")
                params.append(status)
            if wake_at is not _UNSET:
                sets.append("wake_at = ?")
                params.append(wake_at)
            cur.run(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", (*params, run_id))
            if status == "queued":
                self._notify(cur)
            return stored

        # repeatable: a retry after an unanswered COMMIT that did apply finds the run moved
        # on and raises ConflictError, and the runtime re-reads the ledger, as after any race
        return self._transaction(fn, repeatable=True)

    def _project(
        self,
        cur: Cursor,
        stored: StoredEvent,
        contract: str,
        contract_name: str,
        *,
        sealed: bool = False,
    ) -> None:
        """Keep the projections in step with the event, in the transaction that appends it.

        Each (run, seq) is appended once (the events table's key), so a projection row is
        never written twice for one event.
        """
        run_id, ev = stored.run_id, stored.event
        if isinstance(ev, ModelCalled):
            cur.run(
                "INSERT INTO model_calls (run_id, seq, step, attempt, contract_name, provider, "
                "model, at, prompt_hash, input_tokens, cached_input_tokens, cache_write_tokens, "
                "output_tokens, reasoning_tokens, cost_usd) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    stored.seq,
                    ev.step,
                    ev.attempt,
                    contract_name,
                    ev.provider,
                    ev.model,
                    stored.at,
                    ev.prompt_hash,
                    ev.input_tokens,
                    ev.cached_input_tokens or 0,
                    ev.cache_write_tokens or 0,
                    ev.output_tokens,
                    ev.reasoning_tokens or 0,
                    ev.cost_usd,
                ),
            )
            cur.run(
                "INSERT INTO model_spend_daily (contract_name, day, calls, cost_usd) "
                "VALUES (?, ?, 1, ?) ON CONFLICT (contract_name, day) DO UPDATE SET "
                "calls = model_spend_daily.calls + 1, "
                "cost_usd = model_spend_daily.cost_usd + excluded.cost_usd",
                (contract_name, stored.at[:10], ev.cost_usd),
            )
        elif isinstance(ev, ActionCompleted) and not ev.compensation:
            args = blind_args(self._index_key(), ev.match_form) if sealed else ev.match_form
            cur.run(
                "INSERT INTO executed_actions (run_id, step, action, args, at) "
                f"VALUES (?, ?, ?, {self.JSON_PARAM}, ?) ON CONFLICT DO NOTHING",
                (run_id, ev.step, ev.action, canonical(args), ev.completed_at),
            )
        elif isinstance(ev, ReviewRequested):
            cur.run(
                f"INSERT INTO reviews ({REVIEW_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, NULL, NULL, NULL)",
                (
                    ev.review_id,
                    run_id,
                    contract,
                    ev.kind,
                    ev.step,
                    ev.action,
                    ev.effect,
                    json.dumps(ev.reviewers),
                    json.dumps(ev.reasons),
                    ev.requested_at,
                    ev.due_at,
                ),
            )
        elif isinstance(ev, RunCancelled):
            cur.run(
                "UPDATE reviews SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'",
                (run_id,),
            )
        elif isinstance(ev, ReviewDecided):
            cur.run(
                "UPDATE reviews SET status = 'decided', decided_at = ?, decided_by = ?, "
                "verdict = ? WHERE review_id = ?",
                (ev.decided_at, ev.by, ev.verdict, ev.review_id),
            )

    # -- queue -----------------------------------------------------------------------
    def claim(
        self,
        worker: str,
        now: str,
        lease_until: str,
        *,
        max_per_contract: Mapping[str, int] | None = None,
    ) -> RunRow | None:
        def fn(cur: Cursor) -> RunRow | None:
            full: list[str] = []
            if max_per_contract:
                # counting live leases and taking one more must not race another claimer:
                # the capped contracts' locks (in name order, so claimers never deadlock)
                names = sorted(max_per_contract)
                self._lock(cur, *(f"concurrency:{n}" for n in names))
                marks = ", ".join("?" * len(names))
                leased = dict(
                    cur.all(
                        "SELECT contract_name, count(*) FROM runs WHERE lease_owner IS NOT NULL "
                        f"AND lease_expires >= ? AND contract_name IN ({marks}) "
                        "GROUP BY contract_name",
                        (now, *names),
                    )
                )
                full = [n for n in names if leased.get(n, 0) >= max_per_contract[n]]
            skip = f"AND contract_name NOT IN ({', '.join('?' * len(full))}) " if full else ""
            row = cur.one(
                "UPDATE runs SET lease_owner = ?, lease_expires = ?, epoch = epoch + 1 "
                f"WHERE run_id = (SELECT run_id FROM runs WHERE {_RUNNABLE} {skip}"
                f"ORDER BY updated_at LIMIT 1{self.SKIP_LOCKED}) RETURNING {RUN_COLUMNS}",
                (worker, lease_until, now, now, *full),
            )
            return None if row is None else run_row(row)

        # repeatable: a claim whose answer was lost leaves a lease nobody uses, which simply
        # expires; without caps it is one statement
        return self._transaction(fn, repeatable=True, single=not max_per_contract)

    def claim_run(self, run_id: str, worker: str, now: str, lease_until: str) -> RunRow | None:
        row = self._transaction(
            lambda cur: cur.one(
                "UPDATE runs SET lease_owner = ?, lease_expires = ?, epoch = epoch + 1 "
                "WHERE run_id = ? AND (lease_expires IS NULL OR lease_expires < ? "
                f"OR lease_owner = ?) RETURNING {RUN_COLUMNS}",
                (worker, lease_until, run_id, now, worker),
            ),
            repeatable=True,
            single=True,
        )
        if row is None:
            self.get_run(run_id)  # a missing run is NotFound, a held one is None
            return None
        return run_row(row)

    def renew(self, run_id: str, worker: str, epoch: int, lease_until: str) -> bool:
        changed = self._transaction(
            lambda cur: cur.run(
                "UPDATE runs SET lease_expires = ? "
                "WHERE run_id = ? AND lease_owner = ? AND epoch = ?",
                (lease_until, run_id, worker, epoch),
            ),
            repeatable=True,
            single=True,
        )
        return changed == 1

    def release(self, run_id: str, worker: str, epoch: int) -> None:
        def fn(cur: Cursor) -> None:
            row = cur.one(
                "UPDATE runs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE run_id = ? AND lease_owner = ? AND epoch = ? RETURNING status",
                (run_id, worker, epoch),
            )
            if row is not None and row[0] == "queued":
                self._notify(cur)  # released unfinished (a stopping worker): hand it on

        self._transaction(fn, repeatable=True)

    def acquire_rate_slot(self, key: str, limit: int, now: str, since: str) -> str | None:
        def fn(cur: Cursor) -> str | None:
            self._lock(cur, f"rate:{key}")
            cur.run("DELETE FROM rate_slots WHERE key = ? AND at <= ?", (key, since))
            count, oldest = cur.one(
                "SELECT count(*), min(at) FROM rate_slots WHERE key = ?", (key,)
            ) or (0, None)
            if count >= limit:
                return str(oldest)
            cur.run("INSERT INTO rate_slots (key, at) VALUES (?, ?)", (key, now))
            return None

        return self._transaction(fn)

    # -- queries ---------------------------------------------------------------------
    def count_executed(self, action: str, match: Mapping[str, Any], since: str, until: str) -> int:
        sql = "SELECT count(*) FROM executed_actions WHERE action = ? AND at >= ? AND at <= ?"
        params: list[Any] = [action, since, until]
        index = self._index_key() if self.kek is not None else None
        for key, value in match.items():
            condition, values = self._match_arg(key, value)
            if index is not None:  # sealed runs' arguments are projected blinded
                blinded, more = self._match_arg(key, blind(index, value))
                condition, values = f"(({condition}) OR ({blinded}))", [*values, *more]
            sql += f" AND {condition}"
            params.extend(values)
        return int(self._read(sql, params)[0][0])

    def spend(self, contract_name: str, since: str, until: str) -> float:
        if since.endswith(_MIDNIGHT) and until.endswith(_MIDNIGHT):
            # whole UTC days (the day and month windows): the daily roll-up
            rows = self._read(
                "SELECT coalesce(sum(cost_usd), 0) FROM model_spend_daily "
                "WHERE contract_name = ? AND day >= ? AND day < ?",
                (contract_name, since[:10], until[:10]),
            )
        else:
            rows = self._read(
                "SELECT coalesce(sum(cost_usd), 0) FROM model_calls "
                "WHERE contract_name = ? AND at >= ? AND at < ?",
                (contract_name, since, until),
            )
        return float(rows[0][0])

    # -- sealing (charter.ledger.sealing) -------------------------------------------------
    #: the deployment's key-encryption key; ``None``: nothing is sealed, sealed content
    #: reads as unreadable stand-ins
    kek: KeyEncryptionKey | None = None
    _run_keys: dict[str, str | None]
    _data_keys: dict[str, bytes | None]
    _index: bytes | None = None

    def _init_sealing(self, kek: KeyEncryptionKey | None) -> None:
        self.kek = kek
        self._run_keys = {}
        self._data_keys = {}
        self._index = None

    def _sealer(
        self, run_id: str, key_id: str | None
    ) -> Callable[[Event, dict[str, Any]], dict[str, Any]] | None:
        if key_id is None:
            return None
        key = self._data_key(key_id)

        def sealer(ev: Event, data: dict[str, Any]) -> dict[str, Any]:
            paths = SEALED.get(type(ev), ())
            if not paths:
                return data
            if key is None:  # the subject was erased: nothing of it is written again
                return seal_erased(data, paths, key_id)
            return seal(data, paths, key_id, key, run_id, ev.TYPE)

        return sealer

    def _run_key(self, run_id: str) -> str | None:
        """The data key a run's content is sealed with, or ``None`` if it is not sealed."""
        if run_id not in self._run_keys:
            rows = self._read("SELECT key_id FROM run_keys WHERE run_id = ?", (run_id,))
            found = str(rows[0][0]) if rows else None
            if found is not None and self.kek is None:
                raise ConfigurationError(
                    f"run {run_id} is sealed and this process has no key-encryption key "
                    f"({KEK_ENV} or {KEK_FILE_ENV}): it cannot append to it without losing data"
                )
            self._run_keys[run_id] = found
        return self._run_keys[run_id]

    def _data_key(self, key_id: str) -> bytes | None:
        """A data key, unwrapped; ``None`` if it was erased."""
        if key_id not in self._data_keys:
            rows = self._read("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,))
            if not rows:
                raise StoreError(f"data key {key_id} is missing from the ledger")
            wrapped = rows[0][0]
            if wrapped is None:
                self._data_keys[key_id] = None
            else:
                if self.kek is None:
                    raise ConfigurationError(f"no key-encryption key to open data key {key_id}")
                self._data_keys[key_id] = self.kek.unwrap(base64.b64decode(wrapped))
        return self._data_keys[key_id]

    def _new_key(self, cur: Cursor, subject: str, now: str) -> str:
        assert self.kek is not None
        key_id = "dk_" + os.urandom(10).hex()
        key = new_data_key()
        cur.run(
            "INSERT INTO data_keys (key_id, subject, kek_id, wrapped, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key_id, subject, self.kek.key_id, base64.b64encode(self.kek.wrap(key)).decode(), now),
        )
        self._data_keys[key_id] = key
        return key_id

    def _subject_key(self, subject: str) -> str:
        """The live data key of ``subject`` (stored blinded), created on first use."""
        blinded = blind(self._index_key(), subject)

        def fn(cur: Cursor) -> str:
            row = cur.one(
                "SELECT key_id FROM data_keys WHERE subject = ? AND wrapped IS NOT NULL "
                "ORDER BY created_at LIMIT 1",
                (blinded,),
            )
            if row is not None:
                return str(row[0])
            return self._new_key(cur, blinded, format_time(datetime.now(UTC)))

        return self._transaction(fn)

    def _index_key(self) -> bytes:
        """The deployment's key for blinding values (subjects, projected arguments)."""
        if self._index is None:
            if self.kek is None:
                raise ConfigurationError(f"no key-encryption key ({KEK_ENV} or {KEK_FILE_ENV})")
            rows = self._read("SELECT key_id FROM data_keys WHERE subject = ?", (INDEX_SUBJECT,))
            if rows:
                key = self._data_key(str(rows[0][0]))
                assert key is not None
                self._index = key
            else:

                def fn(cur: Cursor) -> str:
                    row = cur.one(
                        "SELECT key_id FROM data_keys WHERE subject = ?", (INDEX_SUBJECT,)
                    )
                    if row is not None:
                        return str(row[0])
                    return self._new_key(cur, INDEX_SUBJECT, format_time(datetime.now(UTC)))

                key = self._data_key(self._transaction(fn))
                assert key is not None
                self._index = key
        return self._index

    def _unseal(self, run_id: str, type_: str, payload: dict[str, Any]) -> Unsealed:
        key_id = str(payload[SEALED_KEY].get("key"))
        if payload[SEALED_KEY].get("erased"):
            return unseal(payload, None, run_id, type_, "erased")
        if self.kek is None:
            return unseal(payload, None, run_id, type_, "no key")
        key = self._data_key(key_id)
        return unseal(payload, key, run_id, type_, "erased" if key is None else "")

    def open_sealed(self, run_id: str, type_: str, payload: dict[str, Any]) -> Unsealed:
        return self._unseal(run_id, type_, payload)

    def projected_args(self, args: Any) -> Any:
        return blind_args(self._index_key(), args)

    def erase_subject(self, subject: str, *, by: str, at: str) -> list[str]:
        """Destroy every data key of ``subject`` (crypto-shredding); the runs they sealed.

        Nothing in the chain changes; their sealed content is unreadable from now on, and
        the projection of their executed actions loses its (blinded) arguments.
        """
        blinded = blind(self._index_key(), subject)

        def fn(cur: Cursor) -> list[str]:
            keys = [
                str(r[0])
                for r in cur.all(
                    "SELECT key_id FROM data_keys WHERE subject = ? AND wrapped IS NOT NULL",
                    (blinded,),
                )
            ]
            runs: list[str] = []
            for key_id in keys:
                cur.run(
                    "UPDATE data_keys SET wrapped = NULL, erased_at = ?, erased_by = ? "
                    "WHERE key_id = ?",
                    (at, by, key_id),
                )
                runs.extend(
                    str(r[0])
                    for r in cur.all("SELECT run_id FROM run_keys WHERE key_id = ?", (key_id,))
                )
            for run_id in runs:
                cur.run(
                    f"UPDATE executed_actions SET args = {self.JSON_PARAM} WHERE run_id = ?",
                    ("{}", run_id),
                )
            return sorted(runs)

        runs = self._transaction(fn)
        self._data_keys.clear()
        return runs

    def rotate_kek(self, new: KeyEncryptionKey) -> int:
        """Re-wrap every live data key under ``new``; no event is rewritten. The count."""
        if self.kek is None:
            raise ConfigurationError(f"no current key-encryption key ({KEK_ENV} or {KEK_FILE_ENV})")
        old = self.kek

        def fn(cur: Cursor) -> int:
            rows = cur.all("SELECT key_id, wrapped FROM data_keys WHERE wrapped IS NOT NULL")
            for key_id, wrapped in rows:
                key = old.unwrap(base64.b64decode(wrapped))
                cur.run(
                    "UPDATE data_keys SET wrapped = ?, kek_id = ? WHERE key_id = ?",
                    (base64.b64encode(new.wrap(key)).decode(), new.key_id, key_id),
                )
            return len(rows)

        count = self._transaction(fn)
        self.kek = new
        return count

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement with ``?`` placeholders, for checks that read the
        tables themselves (``charter verify`` compares projections with the events)."""
        return self._read(sql, params)

    def schema_version(self) -> int:
        return int(self._read("SELECT max(version) FROM charter_migrations")[0][0] or 0)

    def load_bundle(self, policy_hash: str) -> dict[str, Any]:
        rows = self._read("SELECT bundle FROM contracts WHERE policy_hash = ?", (policy_hash,))
        if not rows:
            raise StoreError(
                f"contract with policy hash {policy_hash[:16]} missing from the ledger"
            )
        loaded: dict[str, Any] = json.loads(rows[0][0])
        return loaded

    def _resolve(self, stored: str) -> str:
        if not stored.startswith('{"$blob":'):
            return stored
        ref = json.loads(stored)
        rows = self._read("SELECT data FROM blobs WHERE sha256 = ?", (ref["$blob"],))
        if not rows:
            raise StoreError(
                f"payload {ref['$blob'][:16]} referenced by an event is missing from the ledger"
            )
        return str(rows[0][0])

    def events(self, run_id: str) -> list[StoredEvent]:
        rows = self._read(
            "SELECT seq, type, at, data, prev_hash, hash FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        if not rows:
            self.get_run(run_id)
        out = []
        for seq, type_, at, data, prev, h in rows:
            try:
                payload = json.loads(self._resolve(data))
            except json.JSONDecodeError as exc:
                raise StoreError(
                    f"event {seq} of run {run_id} is not valid JSON ({exc}); run `charter verify {run_id}`"
                ) from None
            if SEALED_KEY in payload:
                opened = self._unseal(run_id, type_, payload)
                out.append(
                    StoredEvent(
                        run_id,
                        seq,
                        at,
                        decode(type_, opened.data),
                        prev,
                        h,
                        opened.unreadable,
                        opened.reason,
                    )
                )
                continue
            out.append(StoredEvent(run_id, seq, at, decode(type_, payload), prev, h))
        return out

    def raw_events(self, run_id: str) -> Iterator[RawEvent]:
        for seq, type_, at, data, prev, h in self._read(
            "SELECT seq, type, at, data, prev_hash, hash FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ):
            yield RawEvent(run_id, seq, type_, at, self._resolve(data), prev, h)

    def get_run(self, run_id: str) -> RunRow:
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError(
                f"no run {run_id}; `charter run list` shows the runs in this ledger"
            )
        return run_row(rows[0])

    def find_run(self, prefix: str) -> RunRow:
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id >= ? AND run_id < ? "
            "ORDER BY run_id LIMIT 2",
            (prefix, prefix + "\uffff"),
        )
        if not rows:
            raise NotFoundError(
                f"no run {prefix}; `charter run list` shows the runs in this ledger"
            )
        if len(rows) > 1 and rows[0][0] != prefix:
            raise NotFoundError(f"run id prefix {prefix!r} is ambiguous; type more characters")
        return run_row(rows[0])

    def list_runs(
        self, *, status: str | None = None, contract: str | None = None, limit: int = 100
    ) -> list[RunRow]:
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if contract:
            where.append("(contract_name = ? OR contract = ?)")
            params.extend([contract, contract])
        query = f"SELECT {RUN_COLUMNS} FROM runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        return [run_row(r) for r in self._read(query, (*params, limit))]

    def run_ids(self, *, contract_name: str | None = None, since: str | None = None) -> list[str]:
        where: list[str] = []
        params: list[Any] = []
        if contract_name:
            where.append("contract_name = ?")
            params.append(contract_name)
        if since:
            where.append("created_at >= ?")
            params.append(since)
        query = "SELECT run_id FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self._read(query + " ORDER BY created_at, run_id", params)]

    def model_spend(
        self, *, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT contract_name, provider, model, count(*), CAST(sum(input_tokens) AS BIGINT), "
            "CAST(sum(cached_input_tokens) AS BIGINT), CAST(sum(output_tokens) AS BIGINT), "
            "CAST(sum(reasoning_tokens) AS BIGINT), sum(cost_usd) "
            "FROM model_calls WHERE at >= ? AND at < ? "
            "GROUP BY contract_name, provider, model ORDER BY contract_name, provider, model",
            (since or "", until or "\uffff"),
        )
        keys = (
            "contract",
            "provider",
            "model",
            "calls",
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def find_model_call(self, prompt_hash: str) -> tuple[str, int] | None:
        hashes = self._read(
            "SELECT DISTINCT prompt_hash FROM model_calls "
            "WHERE prompt_hash >= ? AND prompt_hash < ? LIMIT 2",
            (prompt_hash, prompt_hash + "\uffff"),
        )
        if not hashes:
            return None
        if len(hashes) > 1:
            raise NotFoundError(
                f"prompt hash prefix {prompt_hash!r} is ambiguous; type more characters"
            )
        rows = self._read(
            "SELECT run_id, seq FROM model_calls WHERE prompt_hash = ? "
            "ORDER BY at DESC, run_id DESC, seq DESC LIMIT 1",
            (hashes[0][0],),
        )
        return str(rows[0][0]), int(rows[0][1])

    def list_reviews(self, *, status: str | None = "pending") -> list[ReviewRow]:
        query = f"SELECT {REVIEW_COLUMNS} FROM reviews"
        params: tuple[Any, ...] = ()
        if status:
            query += " WHERE status = ?"
            params = (status,)
        return [
            review_row(r) for r in self._read(query + " ORDER BY requested_at, review_id", params)
        ]

    def get_review(self, review_id: str) -> ReviewRow:
        rows = self._read(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE review_id >= ? AND review_id < ? "
            "ORDER BY review_id LIMIT 2",
            (review_id, review_id + "\uffff"),
        )
        if not rows:
            raise NotFoundError(
                f"no review {review_id}; `charter review list` shows pending reviews"
            )
        if len(rows) > 1 and rows[0][0] != review_id:
            raise NotFoundError(
                f"review id prefix {review_id!r} is ambiguous; type more characters"
            )
        return review_row(rows[0])
