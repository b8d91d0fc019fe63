"""The embedded ledger: one SQLite file in WAL mode.

Writes take ``BEGIN IMMEDIATE`` so the check of the run's last sequence number and lease
epoch and the append happen under one write lock; ``synchronous=FULL`` makes every commit
durable before the runtime moves on (the executor is only called after its ``ActionStarted``
is on disk). Several processes on one machine may share the file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from charter.errors import NotFoundError, StoreError
from charter.ledger.chain import GENESIS, canonical, event_hash
from charter.ledger.events import (
    ActionCompleted,
    Event,
    ModelCalled,
    ReviewDecided,
    ReviewRequested,
    RunCancelled,
    StoredEvent,
)
from charter.ledger.migrations import MIGRATIONS
from charter.ledger.sqlbase import REVIEW_COLUMNS as _REVIEW_COLUMNS
from charter.ledger.sqlbase import RUN_COLUMNS as _RUN_COLUMNS
from charter.ledger.sqlbase import SqlStore, encode_events
from charter.ledger.sqlbase import run_row as _run
from charter.ledger.store import (
    _UNSET,
    DEFAULT_PAYLOAD_CAP,
    ConflictError,
    RunRow,
    StoreLockedError,
    check_schema_version,
)

_MIDNIGHT = "T00:00:00.000000Z"
#: Seconds a write waits for another process's write lock (workers contend for it), and a
#: read for an exclusive lock (rare: readers never wait for writers in WAL mode).
WRITE_WAIT = 30.0
READ_WAIT = 2.0


class SQLiteStore(SqlStore):
    """Ledger in one SQLite file; safe for several processes and threads (one connection each).

    ``read_only`` opens an existing ledger for reading and nothing else: no migration, no
    file created, the connection itself read-only (so ``verify`` works on a read-only mount
    and never turns some other file into a ledger). A writable open refuses a SQLite file
    that holds something other than a Charter ledger rather than adding tables to it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        read_only: bool = False,
        payload_cap: int = DEFAULT_PAYLOAD_CAP,
    ) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self.payload_cap = payload_cap
        self.read_only = read_only
        self._immutable = False
        memory = self.path == ":memory:"
        file = Path(self.path)
        if not memory and (read_only or not create) and not _has_content(file):
            raise StoreError(
                f"no ledger at {self.path}; start a run first (charter run start / charter demo) "
                "or point --db / CHARTER_DATABASE_URL at an existing ledger"
            )
        if read_only and memory:
            raise StoreError("an in-memory ledger cannot be opened read-only")
        if not memory and not file.parent.exists():
            raise StoreError(
                f"cannot create ledger {self.path}: directory {file.parent} does not exist"
            )
        self._local = threading.local()
        self._memory_conn: sqlite3.Connection | None = None
        if memory:
            self._memory_conn = self._connect()
        if read_only:
            self._check_readable()
        else:
            self._migrate()

    # -- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            if self.read_only:
                return self._connect_read_only()
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=WRITE_WAIT, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(WRITE_WAIT * 1000)}")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "cannot open") from None
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """``mode=ro``; on a read-only mount (where SQLite cannot create the WAL index of a
        cleanly closed ledger) ``immutable=1``, which is exact there: nobody can write."""
        target = quote(str(Path(self.path).resolve()))
        while True:
            uri = f"file:{target}?mode=ro" + ("&immutable=1" if self._immutable else "")
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=READ_WAIT, check_same_thread=False
            )
            try:
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError as exc:
                conn.close()
                cannot_open = "unable to open" in str(exc)
                if cannot_open and not self._immutable and not Path(self.path + "-wal").exists():
                    self._immutable = True
                    continue
                raise
            return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._memory_conn is not None:
            return self._memory_conn
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._memory_conn is not None:
            self._memory_conn.close()
            self._memory_conn = None

    def _write(self) -> _Tx:
        return _Tx(self)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "cannot read") from None

    def _error(self, exc: sqlite3.DatabaseError, doing: str) -> StoreError:
        """A SQLite error as the operator needs it: a lock is a lock, not corruption."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            waited = READ_WAIT if self.read_only else WRITE_WAIT
            return StoreLockedError(
                f"ledger {self.path} is locked by another process (waited {waited:g}s): a "
                "long transaction or a tool holding an exclusive lock; try again when it ends"
            )
        if isinstance(exc, sqlite3.OperationalError) and "readonly" in text:
            return StoreError(f"ledger {self.path} is read-only here: {text}")
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            return StoreError(
                f"{doing} ledger {self.path}: {text} (check the path and permissions)"
            )
        return StoreError(
            f"{self.path} is not a usable Charter ledger ({text}); it may be corrupted or "
            "not a SQLite file: restore it from a backup or point --db elsewhere"
        )

    def _check_readable(self) -> None:
        """A read-only open: the file must be a Charter ledger this code can read."""
        tables = {r[0] for r in self._read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "charter_migrations" not in tables:
            raise StoreError(
                f"{self.path} is not a Charter ledger (a SQLite database without Charter's "
                "tables); point --db / CHARTER_DATABASE_URL at a ledger"
            )
        check_schema_version(self.schema_version(), self.path)

    # -- schema ----------------------------------------------------------------------
    def _migrate(self) -> None:
        try:
            with self._write() as cur:
                tables = {
                    r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                if tables and "charter_migrations" not in tables:
                    raise StoreError(
                        f"{self.path} is a SQLite database but not a Charter ledger (it has "
                        f"tables {', '.join(sorted(tables)[:5])}); Charter will not add its "
                        "tables to it: point --db / CHARTER_DATABASE_URL at a new file"
                    )
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS charter_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                done = {r[0] for r in cur.execute("SELECT version FROM charter_migrations")}
                newest = max((m.version for m in MIGRATIONS), default=0)
                if done and max(done) > newest:
                    raise StoreError(
                        f"ledger {self.path} has schema version {max(done)}, newer than this "
                        f"Charter supports ({newest}); upgrade Charter"
                    )
                for m in MIGRATIONS:
                    if m.version in done:
                        continue
                    for statement in m.sqlite:
                        cur.execute(statement)
                    cur.execute(
                        "INSERT INTO charter_migrations VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                        (m.version, m.name),
                    )
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "cannot migrate") from None

    # -- contracts -------------------------------------------------------------------
    def save_bundle(self, policy_hash: str, ref: str, bundle: Mapping[str, Any]) -> None:
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO contracts (policy_hash, ref, bundle) VALUES (?, ?, ?)",
                (policy_hash, ref, canonical(bundle)),
            )

    # -- events ----------------------------------------------------------------------
    def _encode(self, cur: sqlite3.Cursor, data_json: str) -> str:
        if len(data_json) <= self.payload_cap:
            return data_json
        sha = hashlib.sha256(data_json.encode("utf-8")).hexdigest()
        cur.execute(
            "INSERT OR IGNORE INTO blobs (sha256, size, data) VALUES (?, ?, ?)",
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
    ) -> tuple[str, bool]:
        [(_, data_json)] = encode_events(run_id, [event])
        with self._write() as cur:
            if idempotency_key is not None:
                row = cur.execute(
                    "SELECT run_id FROM runs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    return str(row[0]), False
            h = event_hash(GENESIS, run_id, 1, event.TYPE, at, data_json)
            cur.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    contract,
                    contract_name,
                    policy_hash,
                    "queued",
                    idempotency_key,
                    at,
                    at,
                    None,
                    None,
                    None,
                    0,
                    1,
                    h,
                ),
            )
            cur.execute(
                "INSERT INTO events (run_id, seq, type, at, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
                (run_id, 1, event.TYPE, at, self._encode(cur, data_json), GENESIS, h),
            )
        return run_id, True

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
        stored: list[StoredEvent] = []
        encoded = encode_events(run_id, events)
        with self._write() as cur:
            row = cur.execute(
                "SELECT last_seq, last_hash, epoch FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            last_seq, prev, current_epoch = row
            if last_seq != expected_seq:
                raise ConflictError(
                    f"run {run_id} moved on (at event {last_seq}, expected {expected_seq})"
                )
            if epoch is not None and current_epoch != epoch:
                raise ConflictError(
                    f"lease on run {run_id} was taken over (epoch {current_epoch}, ours {epoch})"
                )
            seq = last_seq
            for ev, data_json in encoded:
                seq += 1
                h = event_hash(prev, run_id, seq, ev.TYPE, at, data_json)
                cur.execute(
                    "INSERT INTO events (run_id, seq, type, at, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
                    (run_id, seq, ev.TYPE, at, self._encode(cur, data_json), prev, h),
                )
                self._project(cur, run_id, seq, at, ev)
                stored.append(StoredEvent(run_id, seq, at, ev, prev, h))
                prev = h
            sets = ["last_seq = ?", "last_hash = ?", "updated_at = ?"]
            params: list[Any] = [seq, prev, at]
            if status is not None:
                sets.append("status = ?")
                params.append(status)
            if wake_at is not _UNSET:
                sets.append("wake_at = ?")
                params.append(wake_at)
            cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", (*params, run_id))
        return stored

    def _project(self, cur: sqlite3.Cursor, run_id: str, seq: int, at: str, ev: Event) -> None:
        if isinstance(ev, ModelCalled):
            cur.execute(
                "INSERT OR IGNORE INTO model_calls (run_id, seq, step, attempt, contract_name, "
                "provider, model, at, prompt_hash, input_tokens, cached_input_tokens, "
                "cache_write_tokens, output_tokens, reasoning_tokens, cost_usd) "
                "SELECT ?,?,?,?,contract_name,?,?,?,?,?,?,?,?,?,? FROM runs WHERE run_id = ?",
                (
                    run_id,
                    seq,
                    ev.step,
                    ev.attempt,
                    ev.provider,
                    ev.model,
                    at,
                    ev.prompt_hash,
                    ev.input_tokens,
                    ev.cached_input_tokens or 0,
                    ev.cache_write_tokens or 0,
                    ev.output_tokens,
                    ev.reasoning_tokens or 0,
                    ev.cost_usd,
                    run_id,
                ),
            )
            if cur.rowcount == 1:  # not a replayed append of a call already projected
                cur.execute(
                    "INSERT INTO model_spend_daily (contract_name, day, calls, cost_usd) "
                    "SELECT contract_name, ?, 1, ? FROM runs WHERE run_id = ? "
                    "ON CONFLICT (contract_name, day) DO UPDATE SET "
                    "calls = calls + 1, cost_usd = cost_usd + excluded.cost_usd",
                    (at[:10], ev.cost_usd, run_id),
                )
        elif isinstance(ev, ActionCompleted) and not ev.compensation:
            cur.execute(
                "INSERT OR IGNORE INTO executed_actions (run_id, step, action, args, at) VALUES (?,?,?,?,?)",
                (run_id, ev.step, ev.action, canonical(ev.match_form), ev.completed_at),
            )
        elif isinstance(ev, ReviewRequested):
            contract = cur.execute(
                "SELECT contract FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            cur.execute(
                f"INSERT INTO reviews ({_REVIEW_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ev.review_id,
                    run_id,
                    contract,
                    ev.kind,
                    ev.step,
                    ev.action,
                    ev.effect,
                    "pending",
                    json.dumps(ev.reviewers),
                    json.dumps(ev.reasons),
                    ev.requested_at,
                    ev.due_at,
                    None,
                    None,
                    None,
                ),
            )
        elif isinstance(ev, RunCancelled):
            cur.execute(
                "UPDATE reviews SET status = 'cancelled' WHERE run_id = ? AND status = 'pending'",
                (run_id,),
            )
        elif isinstance(ev, ReviewDecided):
            cur.execute(
                "UPDATE reviews SET status = 'decided', decided_at = ?, decided_by = ?, verdict = ? "
                "WHERE review_id = ?",
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
        with self._write() as cur:
            # BEGIN IMMEDIATE serialises claims across processes, so counting live leases
            # and taking one more cannot race: a per-contract cap holds for every worker
            full: list[str] = []
            if max_per_contract:
                names = sorted(max_per_contract)
                marks = ",".join("?" * len(names))
                leased = dict(
                    cur.execute(
                        f"SELECT contract_name, count(*) FROM runs WHERE lease_owner IS NOT NULL "
                        f"AND lease_expires >= ? AND contract_name IN ({marks}) GROUP BY contract_name",
                        (now, *names),
                    ).fetchall()
                )
                full = [n for n in names if leased.get(n, 0) >= max_per_contract[n]]
            skip = f"AND contract_name NOT IN ({','.join('?' * len(full))}) " if full else ""
            row = cur.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE "
                "(status = 'queued' OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?)) "
                f"AND (lease_expires IS NULL OR lease_expires < ?) {skip}"
                "ORDER BY updated_at LIMIT 1",
                (now, now, *full),
            ).fetchone()
            if row is None:
                return None
            return self._lease(cur, _run(row), worker, lease_until)

    def claim_run(self, run_id: str, worker: str, now: str, lease_until: str) -> RunRow | None:
        with self._write() as cur:
            row = cur.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ? "
                "AND (lease_expires IS NULL OR lease_expires < ? OR lease_owner = ?)",
                (run_id, now, worker),
            ).fetchone()
            if row is None:
                self.get_run(run_id)
                return None
            return self._lease(cur, _run(row), worker, lease_until)

    @staticmethod
    def _lease(cur: sqlite3.Cursor, run: RunRow, worker: str, lease_until: str) -> RunRow:
        epoch = run.epoch + 1
        cur.execute(
            "UPDATE runs SET lease_owner = ?, lease_expires = ?, epoch = ? WHERE run_id = ?",
            (worker, lease_until, epoch, run.run_id),
        )
        return RunRow(
            **{**run.__dict__, "lease_owner": worker, "lease_expires": lease_until, "epoch": epoch}
        )

    def renew(self, run_id: str, worker: str, epoch: int, lease_until: str) -> bool:
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET lease_expires = ? WHERE run_id = ? AND lease_owner = ? AND epoch = ?",
                (lease_until, run_id, worker, epoch),
            )
            return cur.rowcount == 1

    def release(self, run_id: str, worker: str, epoch: int) -> None:
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE run_id = ? AND lease_owner = ? AND epoch = ?",
                (run_id, worker, epoch),
            )

    def acquire_rate_slot(self, key: str, limit: int, now: str, since: str) -> str | None:
        with self._write() as cur:
            cur.execute("DELETE FROM rate_slots WHERE key = ? AND at <= ?", (key, since))
            count, oldest = cur.execute(
                "SELECT count(*), min(at) FROM rate_slots WHERE key = ?", (key,)
            ).fetchone()
            if count >= limit:
                return str(oldest)
            cur.execute("INSERT INTO rate_slots (key, at) VALUES (?, ?)", (key, now))
            return None

    # -- queries ---------------------------------------------------------------------
    def count_executed(self, action: str, match: Mapping[str, Any], since: str, until: str) -> int:
        sql = "SELECT count(*) FROM executed_actions WHERE action = ? AND at >= ? AND at <= ?"
        params: list[Any] = [action, since, until]
        for key, value in match.items():
            sql += " AND json_extract(args, ?) = json_extract(?, '$')"
            params.extend([f'$."{key}"', json.dumps(value)])
        return int(self._read(sql, params)[0][0])

    # -- model spend -----------------------------------------------------------------
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


def _has_content(file: Path) -> bool:
    try:
        return file.stat().st_size > 0
    except OSError:
        return False


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""

    def __init__(self, store: SQLiteStore) -> None:
        if store.read_only:
            raise StoreError(f"ledger {store.path} was opened read-only; this command only reads")
        self.store = store
        self.conn = store.conn
        self.cur = self.conn.cursor()

    def __enter__(self) -> sqlite3.Cursor:
        try:
            self.cur.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self.store._error(exc, "cannot write to") from None
        return self.cur

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                self.conn.execute("ROLLBACK")
                raise self.store._error(err, "cannot commit to") from None
        else:
            self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise self.store._error(exc, "cannot write to") from None
