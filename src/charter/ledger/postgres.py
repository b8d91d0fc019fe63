"""The shared ledger: PostgreSQL, for many workers on many machines.

Same tables, same statements as :mod:`charter.ledger.sqlite` — every statement is written
once in :mod:`charter.ledger.sqlbase`, and one conformance suite runs on both stores. What
this module adds are the hooks that make concurrency safe across machines:

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

from charter.errors import StoreError, StoreUnavailableError
from charter.ledger.migrations import MIGRATIONS
from charter.ledger.sealing import KeyEncryptionKey
from charter.ledger.sqlbase import Cursor, SqlStore, apply_migrations
from charter.ledger.store import DEFAULT_PAYLOAD_CAP, check_schema_version

T = TypeVar("T")

_ATTEMPTS = 4
_DEFAULT_POOL = 10


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
        kek: KeyEncryptionKey | None = None,
        schema: str | None = None,
        pool_size: int | None = None,
    ) -> None:
        conninfo, url_schema, url_pool = parse_url(url)
        self.url = url
        self.schema = schema or url_schema
        self.payload_cap = payload_cap
        self.read_only = read_only
        self._init_sealing(kek)
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
        read: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction, retrying when that cannot apply anything twice.

        A transaction that failed before ``COMMIT`` was sent applied nothing and is retried
        on a fresh connection; one whose ``COMMIT`` got no answer may or may not have been
        applied, and is retried only if ``repeatable`` (running it again is harmless, or it
        detects its own earlier success), else reported as :class:`StoreUnavailableError`.

        ``pipeline`` sends the statements that need no answer in one batch with the
        ``COMMIT`` (libpq pipeline mode), so an append costs two round trips, not six.
        ``single``: ``fn`` runs one statement, which autocommit makes its own transaction
        (one round trip); its outcome is unknown whenever the connection fails. ``read``:
        ``fn`` only reads (allowed on a read-only store, and always safe to repeat).
        """
        if self.read_only and not read:
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
                if read:
                    raise StoreError(f"ledger {self._where} cannot be read: {exc}") from None
                raise StoreError(f"{self._where} refused a write: {exc}") from None
            time.sleep(delay * (1 + random.random()))
            delay *= 2
        raise StoreUnavailableError(
            f"{self._where}: transaction kept failing after {_ATTEMPTS} tries"
        )

    def _read(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """One statement in autocommit mode; always safe to retry."""
        # shared reads (SqlStore) are written with `?`; psycopg wants `%s`
        sql_text = query.replace("?", "%s")
        return self._tx(
            lambda cur: cur.execute(sql_text, params).fetchall(),
            repeatable=True,
            single=True,
            read=True,
        )

    def _recheck(self) -> None:
        """After a connection error, test the idle pooled connections (all may be dead)."""
        # a closed pool or a server still down raises here too: the retry will report it
        with suppress(Exception):
            self._pool.check()

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
                with conn.cursor() as cur:
                    apply_migrations(Cursor(cur, pyformat=True), "postgres", self._where)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot open the PostgreSQL ledger {self._where}: {exc}") from None
        except psycopg.Error as exc:
            raise StoreError(f"{self._where} is not a usable Charter ledger: {exc}") from None

    # -- the dialect's hooks (charter.ledger.sqlbase) ------------------------------------
    LOCK_ROW = " FOR NO KEY UPDATE"
    SKIP_LOCKED = " FOR NO KEY UPDATE SKIP LOCKED"
    JSON_PARAM = "?::jsonb"

    def _transaction(
        self, fn: Callable[[Cursor], T], *, repeatable: bool = False, single: bool = False
    ) -> T:
        # statements that need no answer go in one batch with the COMMIT (pipeline mode)
        return self._tx(
            lambda raw: fn(Cursor(raw, pyformat=True)),
            repeatable=repeatable,
            pipeline=not single,
            single=single,
        )

    def _lock(self, cur: Cursor, *names: str) -> None:
        # advisory locks are per database, so their keys name the schema; taken in one
        # statement in key order, so two claimers never wait on each other in a cycle
        keys = [self._lock_key(*name.split(":", 1)) for name in names]
        cur.run(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM unnest(?::text[]) AS k ORDER BY k",
            (keys,),
        )

    def _notify(self, cur: Cursor) -> None:
        """Wake idle workers when this transaction commits (NOTIFY is transactional)."""
        cur.run("SELECT pg_notify(?, '')", (self._channel,))

    def _match_arg(self, key: str, value: Any) -> tuple[str, list[Any]]:
        equal = _sqlite_equal(value)
        if not equal:
            return "FALSE", []
        return "args -> ? = ANY(?::jsonb[])", [key, equal]

    def wait_for_work(self, timeout: float, stop: threading.Event | None = None) -> None:
        self._listener.wait(timeout, stop)


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
