"""The chaos run's domain: a refunds-like contract whose executors keep their own books.

Every executor call is logged in ``chaos_calls`` (idempotency key, attempt, process), and
its effect is applied in ``chaos_effects`` only if no effect with that key exists yet — the
check and the write in one locked transaction, as an idempotent payment API would do. The
chaos driver then counts effects per key and per (run, step): a retry that came with a
*different* key would show up as a second effect of one step, and a call the ledger never
started would show up as a call without its ``ActionStarted``.

Where the books live comes from ``$CHARTER_CHAOS_EFFECTS``: ``sqlite:///path`` (a file of
their own, next to a SQLite ledger) or a ``postgresql://...?schema=...`` URL (tables in the
chaos schema; connections named ``chaos-effects`` so the driver's connection killer, which
targets the ledger's ``charter`` connections, leaves them alone).

The scripted model refunds, then emails the customer, then answers. Every tenth ticket
claims more than $500, which policy sends to a review that nobody answers: it times out
after the contract's 2 s SLA and is denied (fail closed) by whichever worker looks first.
Every thirteenth ticket's email bounces, which compensates the refund.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from charter.execution.base import ExecutionContext
from charter.models.base import ModelRequest

EFFECTS_ENV = "CHARTER_CHAOS_EFFECTS"
LATENCY_ENV = "CHARTER_CHAOS_LATENCY_MS"

CONTRACT: dict[str, Any] = {
    "contract": "chaos-refunds",
    "version": 1,
    "domain": "bench",
    "description": "Refund a ticket and tell the customer; the chaos run's workload.",
    "input": {
        "type": "object",
        "required": ["ticket", "amount_cents"],
        "properties": {
            "ticket": {"type": "string"},
            "amount_cents": {"type": "integer", "minimum": 1},
            "bounce": {"type": "boolean"},
        },
    },
    "model": {
        "provider": "scripted",
        "name": "chaos-script",
        "seed": 1,
        "script": "bench.chaos_domain:propose",
    },
    "channels": {"orders": {"labels": [], "reader": "bench.chaos_domain:orders"}},
    "actions": {
        "issue_refund": {
            "executor": "bench.chaos_domain:issue_refund",
            "effect": "write",
            "compensate": "reverse_refund",
            "args": {
                "type": "object",
                "required": ["order_id", "amount_cents"],
                "properties": {
                    "order_id": {"type": "string"},
                    "amount_cents": {"type": "integer", "minimum": 1},
                },
            },
        },
        "reverse_refund": {
            "executor": "bench.chaos_domain:reverse_refund",
            "effect": "write",
            "args": {
                "type": "object",
                "required": ["refund_id"],
                "properties": {"refund_id": {"type": "string"}},
            },
        },
        "send_email": {
            "executor": "bench.chaos_domain:send_email",
            "effect": "irreversible",
            "args": {
                "type": "object",
                "required": ["to", "body"],
                "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            },
        },
    },
    "policy": {
        "default": "deny",
        "rules": [
            {"id": "admit", "at": "admit", "when": "true", "effect": "allow", "reason": "All"},
            {
                "id": "big-refund",
                "when": 'action.name == "issue_refund" && action.args.amount_cents > 50000',
                "effect": "review",
                "reason": "Refunds over $500 need a person",
            },
            {
                "id": "routine",
                "when": 'action.name in ["issue_refund", "reverse_refund", "send_email"]',
                "effect": "allow",
                "reason": "Routine",
            },
        ],
    },
    "escalation": {"reviewers": ["support-leads"], "sla": "2s", "on_timeout": "deny"},
    "budget": {"max_model_calls": 6, "max_actions": 4},
}

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chaos_calls (key TEXT NOT NULL, run_id TEXT NOT NULL, "
    "step INTEGER NOT NULL, attempt INTEGER NOT NULL, action TEXT NOT NULL, pid INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS chaos_effects (key TEXT NOT NULL, run_id TEXT NOT NULL, "
    "step INTEGER NOT NULL, action TEXT NOT NULL, effect_id TEXT NOT NULL)",
)


def ticket(n: int) -> dict[str, Any]:
    """The input of the ``n``-th chaos run."""
    return {
        "ticket": f"t{n:05d}",
        "amount_cents": 60_000 if n % 10 == 0 else 1_000 + n,
        "bounce": n % 13 == 0,
    }


def _pause() -> None:
    ms = float(os.environ.get(LATENCY_ENV, "2"))
    if ms > 0:
        time.sleep(ms / 1000)


# -- the books --------------------------------------------------------------------------------
_local = threading.local()


def _location() -> str:
    where = os.environ.get(EFFECTS_ENV)
    if not where:
        raise RuntimeError(f"set {EFFECTS_ENV} to where the chaos effects are kept")
    return where


def _pg_conninfo(url: str) -> str:
    from charter.ledger.postgres import parse_url

    conninfo, schema, _ = parse_url(url)
    conninfo = conninfo.replace("application_name=charter", "application_name=chaos-effects")
    return conninfo + ("&" if "?" in conninfo else "?") + f"options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def books(lock_key: str | None = None) -> Iterator[Any]:
    """A transaction on the books (exclusive for ``lock_key``); yields a DB-API cursor."""
    where = _location()
    if where.startswith("sqlite:///"):
        conn = getattr(_local, "sqlite", None)
        if conn is None:
            conn = sqlite3.connect(
                where.removeprefix("sqlite:///"), isolation_level=None, timeout=60
            )
            conn.execute("PRAGMA journal_mode=WAL")
            _local.sqlite = conn
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _Qmark(cur)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return
    import psycopg

    conn = getattr(_local, "pg", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(_pg_conninfo(where), autocommit=True)
        _local.pg = conn
    try:
        with conn.transaction(), conn.cursor() as cur:
            if lock_key is not None:
                cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
            yield _Pyformat(cur)
    except psycopg.OperationalError:
        conn.close()
        raise


class _Qmark:
    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.cur.execute(sql, params).fetchall()


class _Pyformat:
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(sql.replace("?", "%s"), params)
        return list(self.cur.fetchall()) if self.cur.description else []


def _apply(args: dict[str, Any], ctx: ExecutionContext, *, fail: str | None = None) -> str:
    """Log the call; apply the effect unless its key was applied before. Returns its id."""
    _pause()
    effect_id = "fx_" + hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:16]
    with books(ctx.idempotency_key) as db:
        db.execute(
            "INSERT INTO chaos_calls (key, run_id, step, attempt, action, pid) VALUES (?,?,?,?,?,?)",
            (ctx.idempotency_key, ctx.run_id, ctx.step, ctx.attempt, ctx.action, os.getpid()),
        )
    if fail:
        raise RuntimeError(fail)
    with books(ctx.idempotency_key) as db:
        seen = db.execute(
            "SELECT count(*) FROM chaos_effects WHERE key = ?", (ctx.idempotency_key,)
        )
        if seen[0][0] == 0:
            db.execute(
                "INSERT INTO chaos_effects (key, run_id, step, action, effect_id) VALUES (?,?,?,?,?)",
                (ctx.idempotency_key, ctx.run_id, ctx.step, ctx.action, effect_id),
            )
    return effect_id


# -- executors, reader, model -----------------------------------------------------------------
def issue_refund(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    return {"refund_id": _apply(args, ctx), "amount_cents": args["amount_cents"]}


def reverse_refund(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    return {"reversal_id": _apply(args, ctx), "refund_id": args["refund_id"]}


def send_email(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    bounced = "bounce" in args["to"]
    return {"message_id": _apply(args, ctx, fail="mailbox unavailable" if bounced else None)}


def orders(input: dict[str, Any]) -> dict[str, Any]:
    return {
        "items": [{"order_id": f"ord-{input['ticket']}", "amount_cents": input["amount_cents"]}]
    }


def propose(request: ModelRequest) -> dict[str, Any]:
    """Refund, then email, then answer; what the model saw of earlier steps decides nothing."""
    _pause()
    t = request.input["ticket"]
    step = len(request.history)
    if step == 0:
        refund = {"order_id": f"ord-{t}", "amount_cents": request.input["amount_cents"]}
        return {"actions": [{"name": "issue_refund", "args": refund}], "confidence": 0.9}
    if step == 1:
        domain = "bounce.example" if request.input.get("bounce") else "example.com"
        email = {"to": f"{t}@{domain}", "body": "Your refund is on its way."}
        return {"actions": [{"name": "send_email", "args": email}], "confidence": 0.9}
    return {"final": {"ticket": t}, "confidence": 0.95, "rationale": "done"}
