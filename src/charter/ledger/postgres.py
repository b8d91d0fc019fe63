"""The shared ledger: PostgreSQL, for many workers on many machines.

Same tables, same semantics as :mod:`charter.ledger.sqlite` (one conformance suite runs on
both); what changes is how concurrency is made safe:

* an append locks its run's row (``FOR NO KEY UPDATE``) and checks the last sequence number
  and the lease epoch under that lock, in the transaction that inserts the events and
  updates the projections: a worker whose lease moved on can never append (fencing);
* workers claim with ``FOR NO KEY UPDATE SKIP LOCKED``, so many of them pull from one queue
  without blocking each other, and an expired lease is simply claimable again (the
  reclaimer is the claim query itself);
* limits that must hold across workers (runs per contract, calls per provider per window)
  are serialised with transaction-scoped advisory locks;
* a run that becomes runnable sends ``NOTIFY``; idle workers ``LISTEN`` and wake at once,
  with polling left as the fallback.

Payloads are stored as the canonical JSON *text* the chain hash covers (not ``JSONB``, which
would re-encode it), so ``charter verify`` recomputes exactly what was hashed; only the
``executed_actions`` projection keeps ``JSONB`` arguments, for indexed ``count()`` matching.

Connection errors are retried when nothing can have been committed (the failure happened
before ``COMMIT`` was sent) or when the operation is safe to repeat; otherwise they surface
as :class:`~charter.ledger.store.StoreUnavailableError`, which workers treat as "back off and
carry on": the ledger itself is never left half-written.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

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
    StoreUnavailableError,
    check_schema_version,
)

T = TypeVar("T")

_ATTEMPTS = 4
_DEFAULT_POOL = 10
_RUNNABLE = (
    "status IN ('queued', 'waiting') "
    "AND (status = 'queued' OR (wake_at IS NOT NULL AND wake_at <= %(now)s)) "
    "AND (lease_expires IS NULL OR lease_expires < %(now)s)"
)


def parse_url(url: str) -> tuple[str, str, int]:
    """Split a ``postgresql://`` URL into (libpq conninfo, schema, pool size).

    Charter's own query parameters are ``schema`` (the schema holding the ledger, created
    if missing; default ``public`` or the first entry of ``options=-csearch_path=...``) and
    ``pool_size`` (connections per process, default 10); every other parameter is libpq's
    (``application_name`` defaults to ``charter``).
    """
    parts = urlsplit(url)
    schema: str | None = None
    pool_size = _DEFAULT_POOL
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            schema = value
        elif key == "pool_size":
            try:
                pool_size = max(2, int(value))
            except ValueError:
                raise StoreError(f"pool_size must be an integer, got {value!r}") from None
        else:
            rest.append((key, value))
            found = re.search(r"search_path\s*=\s*([^\s,]+)", value) if key == "options" else None
            if found and schema is None:
                schema = found.group(1).strip('"')
    if not any(key == "application_name" for key, _ in rest):
        rest.append(("application_name", "charter"))  # operators see who holds connections
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    return conninfo, schema or "public", pool_size


def _redact(url: str) -> str:
    """The URL as it may be shown in messages: without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(SqlStore):
    """Ledger in one PostgreSQL schema, shared by any number of workers and processes.

    Thread-safe: one instance (one connection pool) may serve every thread of a process.
    """

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        read_only: bool = False,
        payload_cap: int = DEFAULT_PAYLOAD_CAP,
        schema: str | None = None,
        pool_size: int | None = None,
    ) -> None:
        conninfo, url_schema, url_pool = parse_url(url)
        self.url = url
        self.schema = schema or url_schema
        self.payload_cap = payload_cap
        self.read_only = read_only
        self._conninfo = conninfo
        self._where = f"{_redact(url)} (schema {self.schema})"
        # NOTIFY channels are per database: name ours after the schema so that ledgers in
        # other schemas of the same database do not wake our workers
        self._channel = f"charter:{self.schema}"[:63]
        if read_only:
            self._check_readable()
        else:
            self._migrate(create)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size or url_pool,
            kwargs={"autocommit": True},
            configure=self._configure,
            timeout=15.0,
            name=f"charter:{self.schema}",
            open=True,
        )
        self._listener = _Listener(conninfo, self._channel)

    # -- connections -----------------------------------------------------------------
    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if self.read_only:
            # the server refuses any write on these connections, whatever the code does
            conn.execute("SET default_transaction_read_only = on")

    def _check_readable(self) -> None:
        """A read-only open: the schema must hold a Charter ledger at this code's version."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                table = sql.SQL("{}.charter_migrations").format(sql.Identifier(self.schema))
                exists = conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()
                if exists is None or exists[0] is None:
                    raise StoreError(
                        f"no ledger in {self._where}; start a run first (charter run start / "
                        "charter demo) or point --db / CHARTER_DATABASE_URL at an existing ledger"
                    )
                row = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(table)).fetchone()
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot open the PostgreSQL ledger {self._where}: {exc}") from None
        check_schema_version(int(row[0] or 0) if row else 0, self._where)

    def close(self) -> None:
        self._listener.close()
        self._pool.close()

    def _lock_key(self, kind: str, name: str = "") -> str:
        """Text of an advisory lock: advisory locks are per database, so name the schema."""
        return f"charter.{kind}:{self.schema}:{name}"

    def _tx(
        self,
        fn: Callable[[psycopg.Cursor[Any]], T],
        *,
        repeatable: bool = False,
        pipeline: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction, retrying when that cannot apply anything twice.

        A transaction that failed before ``COMMIT`` was sent applied nothing and is retried
        on a fresh connection; one whose ``COMMIT`` got no answer may or may not have been
        applied, and is retried only if ``repeatable`` (running it again is harmless, or it
        detects its own earlier success), else reported as :class:`StoreUnavailableError`.

        ``pipeline`` sends the statements that need no answer in one batch with the
        ``COMMIT`` (libpq pipeline mode), so an append costs two round trips, not six.
        ``single``: ``fn`` runs one statement, which autocommit makes its own transaction
        (one round trip); its outcome is unknown whenever the connection fails.
        """
        if self.read_only:
            raise StoreError(f"ledger {self._where} was opened read-only; this command only reads")
        delay = 0.05
        for attempt in range(1, _ATTEMPTS + 1):
            committing = single
            try:
                with self._pool.connection() as conn:
                    batch: AbstractContextManager[Any] = (
                        conn.pipeline() if pipeline else nullcontext()
                    )
                    block: AbstractContextManager[Any] = (
                        nullcontext() if single else conn.transaction()
                    )
                    with batch, block, conn.cursor() as cur:
                        result = fn(cur)
                        committing = True
                    return result
            except psycopg.errors.TransactionRollback:
                pass  # deadlock or serialisation failure: rolled back, safe to run again
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                if committing and not repeatable:
                    raise StoreUnavailableError(
                        f"lost the connection to {self._where} while committing ({exc}); "
                        "the write may or may not have been applied"
                    ) from None
                if attempt == _ATTEMPTS:
                    raise StoreUnavailableError(f"cannot reach {self._where}: {exc}") from None
                self._recheck()
            except psycopg.Error as exc:
                raise StoreError(f"{self._where} refused a write: {exc}") from None
            time.sleep(delay * (1 + random.random()))
            delay *= 2
        raise StoreUnavailableError(
            f"{self._where}: transaction kept failing after {_ATTEMPTS} tries"
        )

    def _read(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """One statement in autocommit mode; always safe to retry."""
        delay = 0.05
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:
                    # shared reads (SqlStore) are written with `?`; psycopg wants `%s`
                    return conn.execute(query.replace("?", "%s"), params).fetchall()
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                if attempt == _ATTEMPTS:
                    raise StoreUnavailableError(f"cannot reach {self._where}: {exc}") from None
                self._recheck()
            except psycopg.Error as exc:
                raise StoreError(f"ledger {self._where} cannot be read: {exc}") from None
            time.sleep(delay * (1 + random.random()))
            delay *= 2
        raise AssertionError("unreachable")

    def _recheck(self) -> None:
        """After a connection error, test the idle pooled connections (all may be dead)."""
        # a closed pool or a server still down raises here too: the retry will report it
        with suppress(Exception):
            self._pool.check()

    def _notify(self, cur: psycopg.Cursor[Any]) -> None:
        """Wake idle workers when this transaction commits (NOTIFY is transactional)."""
        cur.execute("SELECT pg_notify(%s, '')", (self._channel,))

    # -- schema ----------------------------------------------------------------------
    def _migrate(self, create: bool) -> None:
        missing = [m.version for m in MIGRATIONS if not m.postgres]
        if missing:
            raise StoreError(
                f"migration(s) {missing} have no PostgreSQL DDL; this Charter cannot open "
                "a PostgreSQL ledger"
            )
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn, conn.transaction():
                # several workers starting at once: one migrates, the others wait and see it done
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (self._lock_key("migrate"),),
                )
                table = sql.SQL("{}.charter_migrations").format(sql.Identifier(self.schema))
                exists = conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()
                if (exists is None or exists[0] is None) and not create:
                    raise StoreError(
                        f"no ledger in {self._where}; start a run first (charter run start / "
                        "charter demo) or point --db / CHARTER_DATABASE_URL at an existing ledger"
                    )
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
                conn.execute(
                    sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema))
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS charter_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM charter_migrations")}
                newest = max((m.version for m in MIGRATIONS), default=0)
                if done and max(done) > newest:
                    raise StoreError(
                        f"ledger {self._where} has schema version {max(done)}, newer than this "
                        f"Charter supports ({newest}); upgrade Charter"
                    )
                for m in MIGRATIONS:
                    if m.version in done:
                        continue
                    for statement in m.postgres:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO charter_migrations VALUES (%s, %s, "
                        """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))""",
                        (m.version, m.name),
                    )
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot open the PostgreSQL ledger {self._where}: {exc}") from None
        except psycopg.Error as exc:
            raise StoreError(f"{self._where} is not a usable Charter ledger: {exc}") from None

    # -- contracts -------------------------------------------------------------------
    def save_bundle(self, policy_hash: str, ref: str, bundle: Mapping[str, Any]) -> None:
        text = canonical(bundle)

        def fn(cur: psycopg.Cursor[Any]) -> None:
            cur.execute(
                "INSERT INTO contracts (policy_hash, ref, bundle) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (policy_hash, ref, text),
            )

        self._tx(fn, repeatable=True)

    # -- events ----------------------------------------------------------------------
    def _encode(self, cur: psycopg.Cursor[Any], data_json: str) -> str:
        if len(data_json) <= self.payload_cap:
            return data_json
        sha = hashlib.sha256(data_json.encode("utf-8")).hexdigest()
        cur.execute(
            "INSERT INTO blobs (sha256, size, data) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
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
        h = event_hash(GENESIS, run_id, 1, event.TYPE, at, data_json)

        def fn(cur: psycopg.Cursor[Any]) -> tuple[str, bool]:
            cur.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                "(%s,%s,%s,%s,'queued',%s,%s,%s,NULL,NULL,NULL,0,1,%s) "
                "ON CONFLICT DO NOTHING RETURNING run_id",
                (run_id, contract, contract_name, policy_hash, idempotency_key, at, at, h),
            )
            if cur.fetchone() is None:
                # the key is known (or this very run was created by an earlier attempt whose
                # COMMIT went unanswered: run ids are random, so a clash is that attempt)
                row = cur.execute(
                    "SELECT run_id FROM runs WHERE run_id = %s OR idempotency_key = %s",
                    (run_id, idempotency_key),
                ).fetchone()
                if row is None:  # pragma: no cover - the conflicting row vanished
                    raise StoreError(f"could not create run {run_id}")
                return str(row[0]), row[0] == run_id
            cur.execute(
                "INSERT INTO events (run_id, seq, type, at, data, prev_hash, hash) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (run_id, 1, event.TYPE, at, self._encode(cur, data_json), GENESIS, h),
            )
            self._notify(cur)
            return run_id, True

        return self._tx(fn, repeatable=True, pipeline=True)

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
        encoded = encode_events(run_id, events)

        def fn(cur: psycopg.Cursor[Any]) -> list[StoredEvent]:
            stored: list[StoredEvent] = []
            row = cur.execute(
                "SELECT last_seq, last_hash, epoch, contract, contract_name FROM runs "
                "WHERE run_id = %s FOR NO KEY UPDATE",
                (run_id,),
            ).fetchone()
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
            seq = last_seq
            rows = []
            for ev, data_json in encoded:
                seq += 1
                h = event_hash(prev, run_id, seq, ev.TYPE, at, data_json)
                rows.append((run_id, seq, ev.TYPE, at, self._encode(cur, data_json), prev, h))
                stored.append(StoredEvent(run_id, seq, at, ev, prev, h))
                prev = h
            cur.executemany(
                "INSERT INTO events (run_id, seq, type, at, data, prev_hash, hash) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s)",
                rows,
            )
            for s in stored:
                self._project(cur, s, contract, contract_name)
            sets = ["last_seq = %s", "last_hash = %s", "updated_at = %s"]
            params: list[Any] = [seq, prev, at]
            if status is not None:
                sets.append("status = %s")
                params.append(status)
            if wake_at is not _UNSET:
                sets.append("wake_at = %s")
                params.append(wake_at)
            cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = %s", (*params, run_id))
            if status == "queued":
                self._notify(cur)
            return stored

        # repeatable: a retry after an unanswered COMMIT that did apply finds the run moved
        # on and raises ConflictError, and the runtime re-reads the ledger, as after any race
        return self._tx(fn, repeatable=True, pipeline=True)

    def _project(
        self, cur: psycopg.Cursor[Any], stored: StoredEvent, contract: str, contract_name: str
    ) -> None:
        run_id, ev = stored.run_id, stored.event
        if isinstance(ev, ModelCalled):
            cur.execute(
                "INSERT INTO model_calls (run_id, seq, step, attempt, contract_name, provider, "
                "model, at, prompt_hash, input_tokens, cached_input_tokens, cache_write_tokens, "
                "output_tokens, reasoning_tokens, cost_usd) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
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
        elif isinstance(ev, ActionCompleted) and not ev.compensation:
            cur.execute(
                "INSERT INTO executed_actions (run_id, step, action, args, at) "
                "VALUES (%s,%s,%s,%s::jsonb,%s) ON CONFLICT DO NOTHING",
                (run_id, ev.step, ev.action, canonical(ev.match_form), ev.completed_at),
            )
        elif isinstance(ev, ReviewRequested):
            cur.execute(
                f"INSERT INTO reviews ({_REVIEW_COLUMNS}) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,'pending',%s,%s,%s,%s,NULL,NULL,NULL)",
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
            cur.execute(
                "UPDATE reviews SET status = 'cancelled' WHERE run_id = %s AND status = 'pending'",
                (run_id,),
            )
        elif isinstance(ev, ReviewDecided):
            cur.execute(
                "UPDATE reviews SET status = 'decided', decided_at = %s, decided_by = %s, "
                "verdict = %s WHERE review_id = %s",
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
        def fn(cur: psycopg.Cursor[Any]) -> RunRow | None:
            full: list[str] = []
            if max_per_contract:
                # claims of capped contracts take their advisory locks (in name order, so
                # claimers never deadlock): counting live leases and adding one is atomic
                names = sorted(max_per_contract)
                cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                    "FROM unnest(%s::text[]) AS k ORDER BY k",
                    ([self._lock_key("concurrency", n) for n in names],),
                )
                leased = dict(
                    cur.execute(
                        "SELECT contract_name, count(*) FROM runs WHERE lease_owner IS NOT NULL "
                        "AND lease_expires >= %s AND contract_name = ANY(%s::text[]) "
                        "GROUP BY contract_name",
                        (now, names),
                    ).fetchall()
                )
                full = [n for n in names if leased.get(n, 0) >= max_per_contract[n]]
            row = cur.execute(
                f"UPDATE runs SET lease_owner = %(worker)s, lease_expires = %(until)s, "
                f"epoch = epoch + 1 WHERE run_id = ("
                f"SELECT run_id FROM runs WHERE {_RUNNABLE} "
                "AND NOT (contract_name = ANY(%(full)s::text[])) "
                "ORDER BY updated_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"
                f") RETURNING {_RUN_COLUMNS}",
                {"worker": worker, "until": lease_until, "now": now, "full": full},
            ).fetchone()
            return None if row is None else _run(row)

        # repeatable: a claim whose answer was lost leaves a lease nobody uses, which simply
        # expires; the single-statement form (no caps) needs no explicit transaction
        return self._tx(fn, repeatable=True, single=not max_per_contract)

    def claim_run(self, run_id: str, worker: str, now: str, lease_until: str) -> RunRow | None:
        def fn(cur: psycopg.Cursor[Any]) -> RunRow | None:
            row = cur.execute(
                "UPDATE runs SET lease_owner = %(worker)s, lease_expires = %(until)s, "
                "epoch = epoch + 1 WHERE run_id = %(run)s AND (lease_expires IS NULL "
                f"OR lease_expires < %(now)s OR lease_owner = %(worker)s) RETURNING {_RUN_COLUMNS}",
                {"worker": worker, "until": lease_until, "now": now, "run": run_id},
            ).fetchone()
            return None if row is None else _run(row)

        leased = self._tx(fn, repeatable=True, single=True)
        if leased is None:
            self.get_run(run_id)
        return leased

    def renew(self, run_id: str, worker: str, epoch: int, lease_until: str) -> bool:
        def fn(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute(
                "UPDATE runs SET lease_expires = %s "
                "WHERE run_id = %s AND lease_owner = %s AND epoch = %s",
                (lease_until, run_id, worker, epoch),
            )
            return cur.rowcount == 1

        return self._tx(fn, repeatable=True, single=True)

    def release(self, run_id: str, worker: str, epoch: int) -> None:
        def fn(cur: psycopg.Cursor[Any]) -> None:
            # released unfinished (a stopping worker): NOTIFY hands it on at once
            cur.execute(
                "WITH released AS (UPDATE runs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE run_id = %s AND lease_owner = %s AND epoch = %s RETURNING status) "
                "SELECT pg_notify(%s, '') FROM released WHERE status = 'queued'",
                (run_id, worker, epoch, self._channel),
            )

        self._tx(fn, repeatable=True, single=True)

    def wait_for_work(self, timeout: float, stop: threading.Event | None = None) -> None:
        self._listener.wait(timeout, stop)

    def acquire_rate_slot(self, key: str, limit: int, now: str, since: str) -> str | None:
        def fn(cur: psycopg.Cursor[Any]) -> str | None:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (self._lock_key("rate", key),),
            )
            cur.execute("DELETE FROM rate_slots WHERE key = %s AND at <= %s", (key, since))
            count, oldest = cur.execute(
                "SELECT count(*), min(at) FROM rate_slots WHERE key = %s", (key,)
            ).fetchone() or (0, None)
            if count >= limit:
                return str(oldest)
            cur.execute("INSERT INTO rate_slots (key, at) VALUES (%s, %s)", (key, now))
            return None

        return self._tx(fn)

    # -- queries ---------------------------------------------------------------------
    def count_executed(self, action: str, match: Mapping[str, Any], since: str, until: str) -> int:
        query = "SELECT count(*) FROM executed_actions WHERE action = %s AND at >= %s AND at <= %s"
        params: list[Any] = [action, since, until]
        for key, value in match.items():
            equal = _sqlite_equal(value)
            if not equal:
                query += " AND FALSE"
                continue
            query += " AND args -> %s = ANY(%s::jsonb[])"
            params.extend([key, equal])
        return int(self._read(query, params)[0][0])

    def spend(self, contract_name: str, since: str, until: str) -> float:
        rows = self._read(
            "SELECT coalesce(sum(cost_usd), 0) FROM model_calls "
            "WHERE contract_name = %s AND at >= %s AND at < %s",
            (contract_name, since, until),
        )
        return float(rows[0][0])


def _sqlite_equal(value: Any) -> list[str]:
    """The JSON values SQLite's ``json_extract(args, key) = json_extract(value)`` accepts.

    ``count()`` must answer the same on both stores. SQLite compares SQL values: JSON
    ``true``/``false`` are the integers 1/0, and JSON ``null`` is SQL NULL, which equals
    nothing. So a ``null`` matches no action, ``true`` also matches ``1`` (and vice versa).
    """
    if value is None:
        return []
    if isinstance(value, bool):
        return [json.dumps(value), json.dumps(int(value))]
    if isinstance(value, int | float) and value in (0, 1):
        return [json.dumps(value), json.dumps(bool(value))]
    return [json.dumps(value)]


class _Listener:
    """One ``LISTEN`` connection per store, fanning notifications out to waiting threads.

    Each waiting thread remembers the last generation it saw, so a notification that
    arrives between a worker's empty claim and its next wait is not lost: the wait returns
    at once. A dropped connection is re-established, and every waiter is woken (it may have
    missed notifications meanwhile).
    """

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._cond = threading.Condition()
        self._generation = 0
        self._seen = threading.local()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self.connected = threading.Event()

    def _bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def _loop(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.connected.set()
                    self._bump()
                    backoff = 0.1
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._bump()
            except psycopg.Error:
                self.connected.clear()
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name=f"charter-listen:{self._channel}", daemon=True
                )
                self._thread.start()

    def wait(self, timeout: float, stop: threading.Event | None) -> None:
        self.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = getattr(self._seen, "generation", None)
            if seen is None:
                seen = self._generation
            while self._generation == seen and not (stop is not None and stop.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # wake at least every 0.1 s to honour ``stop`` promptly
                self._cond.wait(min(left, 0.1))
            self._seen.generation = self._generation

    def close(self) -> None:
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
