"""A small, real payments system for the refunds demo: one SQLite file.

The file lives at ``$CHARTER_DEMO_PAYMENTS`` (default ``payments.db`` in the current
directory, resolved on every call so tests can point it elsewhere). Tables:

``customers``  customer_id, name, email, tier (``standard`` | ``gold`` | ``blocked``), phone
``notes``      internal remarks per customer (confidential: fraud checks, agent notes)
``orders``     order_id (``ord-NNNNN``), customer_id, description, amount_cents, status, placed_at
``refunds``    refund_id, idempotency_key UNIQUE, order_id, amount_cents, destination,
               reversed flag — what the ``issue_refund`` executor writes
``outbox``     message_id, idempotency_key UNIQUE, to_addr, subject, body — ``send_email``

Several worker processes may use the file at once: connections run in WAL mode with a
busy timeout, and every write that checks before it inserts does so inside
``BEGIN IMMEDIATE`` so two workers cannot both pass the check. ``synchronous=NORMAL`` in
WAL mode survives a killed process (the failure Charter's crash tests inject), though not
a power cut.

Readers and executors use :func:`connection`: one connection per process and file, kept
open and shared by threads under a lock. Opening and closing a connection per call would
cost a WAL checkpoint on every close (the last connection to a WAL file checkpoints it),
about 5 ms instead of 0.2 ms per executor call. A forked child notices the new process id
and opens its own. :func:`close_all` closes them (also at exit).

Money is integer cents throughout. ``refunded_cents`` of an order is never stored: it is
the sum of the order's refunds that were not reversed, read live.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from examples.refunds.tickets import Ticket

ENV_VAR = "CHARTER_DEMO_PAYMENTS"
DEFAULT_FILENAME = "payments.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS customers (
        customer_id TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        email       TEXT NOT NULL,
        tier        TEXT NOT NULL CHECK (tier IN ('standard', 'gold', 'blocked')),
        phone       TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS notes (
        customer_id TEXT NOT NULL REFERENCES customers (customer_id),
        position    INTEGER NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (customer_id, position)
    )""",
    """CREATE TABLE IF NOT EXISTS orders (
        order_id     TEXT PRIMARY KEY CHECK (order_id GLOB 'ord-[0-9][0-9][0-9][0-9][0-9]'),
        customer_id  TEXT NOT NULL REFERENCES customers (customer_id),
        description  TEXT NOT NULL,
        amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
        status       TEXT NOT NULL,
        placed_at    TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, placed_at)",
    """CREATE TABLE IF NOT EXISTS refunds (
        refund_id       TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        order_id        TEXT NOT NULL REFERENCES orders (order_id),
        amount_cents    INTEGER NOT NULL CHECK (amount_cents > 0),
        destination     TEXT,
        run_id          TEXT,
        created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        reversed        INTEGER NOT NULL DEFAULT 0 CHECK (reversed IN (0, 1)),
        reversed_at     TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS refunds_by_order ON refunds (order_id, reversed)",
    """CREATE TABLE IF NOT EXISTS outbox (
        message_id      TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        to_addr         TEXT NOT NULL,
        subject         TEXT NOT NULL,
        body            TEXT NOT NULL,
        run_id          TEXT,
        created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )""",
)


def database_path() -> Path:
    """Where the payments file is: ``$CHARTER_DEMO_PAYMENTS`` or ``./payments.db``."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_FILENAME)


def connect(
    path: str | os.PathLike[str] | None = None, *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open a new connection to the payments database (creating its schema if needed).

    The caller closes it. The connection is in autocommit mode: use :func:`transaction`
    for writes that must be atomic. Rows come back as :class:`sqlite3.Row`.
    """
    target = Path(path) if path is not None else database_path()
    conn = sqlite3.connect(
        target,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        # re-check under the write lock: another process may have just done it
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


_shared: dict[tuple[int, str], tuple[sqlite3.Connection, threading.RLock]] = {}
_shared_lock = threading.Lock()


@contextmanager
def connection(path: str | os.PathLike[str] | None = None) -> Iterator[sqlite3.Connection]:
    """This process's connection to the payments file, held exclusively while in use.

    Re-entrant within one thread; other threads wait. Do not close it: see
    :func:`close_all`.
    """
    target = (Path(path) if path is not None else database_path()).absolute()
    key = (os.getpid(), str(target))
    with _shared_lock:
        entry = _shared.get(key)
        if entry is None:
            entry = (connect(target, check_same_thread=False), threading.RLock())
            _shared[key] = entry
    conn, lock = entry
    with lock:
        yield conn


def close_all() -> None:
    """Close this process's shared connections (the next :func:`connection` reopens)."""
    pid = os.getpid()
    with _shared_lock:
        for key in [k for k in _shared if k[0] == pid]:
            conn, lock = _shared.pop(key)
            with lock:
                conn.close()


atexit.register(close_all)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error): take the write lock first."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _use(conn: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
    if conn is not None:
        yield conn
    else:
        with connection() as own:
            yield own


# -- seeding --------------------------------------------------------------------------------


def seed(tickets: Iterable[Ticket], path: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Create the customers, notes and orders the tickets refer to; idempotent.

    Rows are upserted, so seeding the same tickets twice changes nothing and seeding a
    different batch brings the records it names up to date. Refunds and the outbox are
    never touched. Returns how many distinct customers and orders the tickets named.
    """
    customers: dict[str, dict[str, Any]] = {}
    orders: dict[str, dict[str, Any]] = {}
    for ticket in tickets:
        for customer in ticket.customers:
            customers[customer["customer_id"]] = customer
        for order in ticket.orders:
            orders[order["order_id"]] = order
    with connection(path) as conn, transaction(conn):
        conn.executemany(
            """INSERT INTO customers (customer_id, name, email, tier, phone)
               VALUES (:customer_id, :name, :email, :tier, :phone)
               ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name,
                 email = excluded.email, tier = excluded.tier, phone = excluded.phone""",
            list(customers.values()),
        )
        conn.executemany("DELETE FROM notes WHERE customer_id = ?", [(cid,) for cid in customers])
        conn.executemany(
            "INSERT INTO notes (customer_id, position, body) VALUES (?, ?, ?)",
            [
                (cid, position, body)
                for cid, customer in customers.items()
                for position, body in enumerate(customer.get("notes", ()))
            ],
        )
        conn.executemany(
            """INSERT INTO orders (order_id, customer_id, description, amount_cents, status,
                                   placed_at)
               VALUES (:order_id, :customer_id, :description, :amount_cents, :status,
                       :placed_at)
               ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
                 description = excluded.description, amount_cents = excluded.amount_cents,
                 status = excluded.status, placed_at = excluded.placed_at""",
            list(orders.values()),
        )
    return {"customers": len(customers), "orders": len(orders)}


# -- queries --------------------------------------------------------------------------------


def get_customer(conn: sqlite3.Connection, customer_id: str) -> dict[str, Any] | None:
    """The customer's CRM record, or None."""
    row = conn.execute(
        "SELECT customer_id, name, email, tier, phone FROM customers WHERE customer_id = ?",
        (customer_id,),
    ).fetchone()
    return dict(row) if row is not None else None


def get_notes(conn: sqlite3.Connection, customer_id: str) -> list[str]:
    """Internal notes on the customer, oldest first."""
    rows = conn.execute(
        "SELECT body FROM notes WHERE customer_id = ? ORDER BY position", (customer_id,)
    )
    return [row["body"] for row in rows]


def get_order(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    """One order with its live ``refunded_cents``, or None."""
    row = conn.execute(_ORDER_SELECT + " WHERE o.order_id = ?", (order_id,)).fetchone()
    return dict(row) if row is not None else None


def customer_orders(conn: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    """The customer's orders, newest first, each with its live ``refunded_cents``."""
    rows = conn.execute(
        _ORDER_SELECT + " WHERE o.customer_id = ? ORDER BY o.placed_at DESC, o.order_id",
        (customer_id,),
    )
    return [dict(row) for row in rows]


_ORDER_SELECT = """
    SELECT o.order_id, o.customer_id, o.description, o.amount_cents, o.status, o.placed_at,
           COALESCE((SELECT SUM(r.amount_cents) FROM refunds r
                     WHERE r.order_id = o.order_id AND r.reversed = 0), 0) AS refunded_cents
    FROM orders o"""


def refunded_cents(order_id: str, conn: sqlite3.Connection | None = None) -> int:
    """What has been refunded on one order and not reversed."""
    with _use(conn) as c:
        row = c.execute(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM refunds WHERE order_id = ? AND reversed = 0",
            (order_id,),
        ).fetchone()
    return int(row[0])


def total_refunded_cents(conn: sqlite3.Connection | None = None) -> int:
    """Everything refunded and not reversed, across all orders."""
    with _use(conn) as c:
        row = c.execute(
            "SELECT COALESCE(SUM(amount_cents), 0) FROM refunds WHERE reversed = 0"
        ).fetchone()
    return int(row[0])


def refund_count(conn: sqlite3.Connection | None = None, *, include_reversed: bool = False) -> int:
    """How many refunds exist (by default only those not reversed)."""
    sql = "SELECT COUNT(*) FROM refunds" + ("" if include_reversed else " WHERE reversed = 0")
    with _use(conn) as c:
        return int(c.execute(sql).fetchone()[0])


def outbox_count(conn: sqlite3.Connection | None = None) -> int:
    """How many emails were sent."""
    with _use(conn) as c:
        return int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def summary(conn: sqlite3.Connection | None = None) -> dict[str, int]:
    """Totals for a demo summary: refunds, reversed refunds, cents refunded, emails sent."""
    with _use(conn) as c:
        row = c.execute(
            """SELECT COUNT(*) FILTER (WHERE reversed = 0),
                      COUNT(*) FILTER (WHERE reversed = 1),
                      COALESCE(SUM(amount_cents) FILTER (WHERE reversed = 0), 0)
               FROM refunds"""
        ).fetchone()
        emails = int(c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    return {
        "refunds": int(row[0]),
        "reversed": int(row[1]),
        "refunded_cents": int(row[2]),
        "emails": emails,
    }
