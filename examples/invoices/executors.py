"""Executors of the invoices contract's actions: they write to the AP system.

Every effect is keyed UNIQUE on the action's idempotency key, so a retry after a crash
returns what the first call did; checks and writes share one ``BEGIN IMMEDIATE``
transaction. An invoice that is no longer open cannot be approved or held (a real error,
recorded as ``ActionFailed``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from charter import ExecutionContext
from examples.invoices import ap


def _id(prefix: str, key: str) -> str:
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def approve_invoice(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Approve ``invoice_id`` for payment of ``amount_cents`` (which must be its total)."""
    invoice_id, amount = str(args["invoice_id"]), int(args["amount_cents"])
    with ap.connection() as conn, ap.transaction(conn):
        done = conn.execute(
            "SELECT * FROM approvals WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
        if done is not None:
            return {
                "approval_id": done["approval_id"],
                "invoice_id": invoice_id,
                "amount_cents": amount,
            }
        row = ap.invoice(conn, invoice_id)
        if row is None:
            raise ValueError(f"unknown invoice {invoice_id!r}")
        if row["status"] != "open":
            raise ValueError(f"invoice {invoice_id} is {row['status']}, not open")
        if row["total_cents"] != amount:
            raise ValueError(
                f"invoice {invoice_id} totals {row['total_cents']} cents, not {amount}"
            )
        approval_id = _id("apv", ctx.idempotency_key)
        conn.execute(
            "INSERT INTO approvals VALUES (?, ?, ?, ?, ?)",
            (approval_id, ctx.idempotency_key, invoice_id, amount, ctx.run_id),
        )
        conn.execute("UPDATE invoices SET status = 'approved' WHERE invoice_id = ?", (invoice_id,))
    return {"approval_id": approval_id, "invoice_id": invoice_id, "amount_cents": amount}


def hold_invoice(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Put ``invoice_id`` on hold with a ``reason`` for the AP clerks."""
    invoice_id = str(args["invoice_id"])
    with ap.connection() as conn, ap.transaction(conn):
        done = conn.execute(
            "SELECT hold_id FROM holds WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
        if done is not None:
            return {"hold_id": done["hold_id"], "invoice_id": invoice_id}
        row = ap.invoice(conn, invoice_id)
        if row is None:
            raise ValueError(f"unknown invoice {invoice_id!r}")
        if row["status"] != "open":
            raise ValueError(f"invoice {invoice_id} is {row['status']}, not open")
        hold_id = _id("hld", ctx.idempotency_key)
        conn.execute(
            "INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?)",
            (
                hold_id,
                ctx.idempotency_key,
                invoice_id,
                args["reason"],
                args.get("note", ""),
                ctx.run_id,
            ),
        )
        conn.execute("UPDATE invoices SET status = 'held' WHERE invoice_id = ?", (invoice_id,))
    return {"hold_id": hold_id, "invoice_id": invoice_id}


def query_supplier(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Queue an email to the supplier (the outbox stands in for the mail server)."""
    with ap.connection() as conn, ap.transaction(conn):
        done = conn.execute(
            "SELECT query_id FROM supplier_queries WHERE idempotency_key = ?",
            (ctx.idempotency_key,),
        ).fetchone()
        if done is not None:
            return {"query_id": done["query_id"]}
        query_id = _id("qry", ctx.idempotency_key)
        conn.execute(
            "INSERT INTO supplier_queries VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                query_id,
                ctx.idempotency_key,
                args["supplier_id"],
                args["to"],
                args["subject"],
                args["body"],
                ctx.run_id,
            ),
        )
    return {"query_id": query_id}
