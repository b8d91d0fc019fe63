"""The embedded ledger: one SQLite file in WAL mode.

Writes take ``BEGIN IMMEDIATE`` so the check of the run's last sequence number and lease
epoch and the append happen under one write lock; ``synchronous=FULL`` makes every commit
durable before the runtime moves on (the executor is only called after its ``ActionStarted``
is on disk). Several processes on one machine may share the file. The statements are
:mod:`charter.ledger.sqlbase`'s, shared with PostgreSQL; this module opens the file (read-only
for read commands), migrates it, and supplies the transaction hook.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from charter.errors import StoreError, StoreLockedError
from charter.ledger.sealing import KeyEncryptionKey
from charter.ledger.sqlbase import Cursor, SqlStore, apply_migrations
from charter.ledger.store import DEFAULT_PAYLOAD_CAP, check_schema_version

T = TypeVar("T")

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
        kek: KeyEncryptionKey | None = None,
    ) -> None:
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self.payload_cap = payload_cap
        self.read_only = read_only
        self._immutable = False
        self._init_sealing(kek)
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
                apply_migrations(Cursor(cur), "sqlite", self.path)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "cannot migrate") from None

    # -- the dialect's hooks (charter.ledger.sqlbase) ------------------------------------
    def _transaction(
        self, fn: Callable[[Cursor], T], *, repeatable: bool = False, single: bool = False
    ) -> T:
        # BEGIN IMMEDIATE takes the file's write lock up front: every check-then-write in
        # fn (the run's head, live leases under a cap, a rate window) is serialised
        with self._write() as cur:
            return fn(Cursor(cur))

    def _match_arg(self, key: str, value: Any) -> tuple[str, list[Any]]:
        return "json_extract(args, ?) = json_extract(?, '$')", [f'$."{key}"', json.dumps(value)]


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
