"""Executors of the refunds contract's actions, named in ``refunds.yaml`` by import path.

Each executor receives the action's validated arguments and an
:class:`charter.ExecutionContext` whose ``idempotency_key`` is stable for
one action of one run. The effect is keyed on it with a UNIQUE constraint, so an executor
retried after a crash (same key) returns what the first call did and never applies the
effect twice. Reusing a key for *different* arguments is refused, as payment APIs do.

Real failures raise (the runtime records ``ActionFailed``): an unknown order or refund, a
refund larger than what is left to refund on the order. Checks and writes happen in one
``BEGIN IMMEDIATE`` transaction, so two workers cannot together refund more than was paid.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from charter import ExecutionContext
from examples.refunds import payments

ORIGINAL_PAYMENT_METHOD = "original_payment_method"
"""The ``destination`` reported for a refund to the card or account that paid."""


def _derived_id(prefix: str, key: str) -> str:
    """A stable id from the idempotency key, so a retried effect has the same id."""
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _require(args: dict[str, Any], name: str, kind: type) -> Any:
    value = args.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def _refund_result(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "refund_id": row["refund_id"],
        "order_id": row["order_id"],
        "amount_cents": row["amount_cents"],
        "destination": row["destination"] or ORIGINAL_PAYMENT_METHOD,
    }


def issue_refund(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Refund ``amount_cents`` of ``order_id``, to the original payment method or ``destination``.

    Returns ``{"refund_id", "order_id", "amount_cents", "destination"}``. A retry with the
    same idempotency key returns the refund already made. Raises :class:`ValueError` for an
    unknown order, a non-positive amount, or more than the order has left to refund.
    """
    order_id = _require(args, "order_id", str)
    amount = _require(args, "amount_cents", int)
    destination = args.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise ValueError(f"destination must be a string, got {destination!r}")
    if amount <= 0:
        raise ValueError(f"amount_cents must be positive, got {amount}")
    with payments.connection() as conn, payments.transaction(conn):
        existing = conn.execute(
            "SELECT * FROM refunds WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
        if existing is not None:
            if (existing["order_id"], existing["amount_cents"], existing["destination"]) != (
                order_id,
                amount,
                destination,
            ):
                raise ValueError(
                    f"idempotency key {ctx.idempotency_key!r} was already used for refund "
                    f"{existing['refund_id']} of {existing['amount_cents']} cents on "
                    f"{existing['order_id']}"
                )
            return _refund_result(existing)
        order = payments.get_order(conn, order_id)
        if order is None:
            raise ValueError(f"unknown order {order_id!r}")
        remaining = order["amount_cents"] - order["refunded_cents"]
        if amount > remaining:
            raise ValueError(
                f"refund of {amount} cents exceeds what is left to refund on {order_id}: "
                f"{remaining} of {order['amount_cents']} cents"
            )
        conn.execute(
            """INSERT INTO refunds (refund_id, idempotency_key, order_id, amount_cents,
                                    destination, run_id)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (
                _derived_id("re", ctx.idempotency_key),
                ctx.idempotency_key,
                order_id,
                amount,
                destination,
                ctx.run_id,
            ),
        )
        row = conn.execute(
            "SELECT * FROM refunds WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
    return _refund_result(row)


def reverse_refund(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Mark refund ``refund_id`` reversed; reversing it again changes nothing.

    Returns ``{"refund_id", "reversed": True}``. Raises :class:`ValueError` for an unknown
    refund. (The key is not stored: reversal is idempotent on the refund itself.)
    """
    refund_id = _require(args, "refund_id", str)
    with payments.connection() as conn, payments.transaction(conn):
        row = conn.execute(
            "SELECT reversed FROM refunds WHERE refund_id = ?", (refund_id,)
        ).fetchone()
        if row is None:
            raise ValueError(f"unknown refund {refund_id!r}")
        if not row["reversed"]:
            conn.execute(
                """UPDATE refunds SET reversed = 1,
                          reversed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                   WHERE refund_id = ?""",
                (refund_id,),
            )
    return {"refund_id": refund_id, "reversed": True}


def send_email(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Put an email in the outbox; returns ``{"message_id"}``, the same one on a retry."""
    to = _require(args, "to", str).strip()
    subject = _require(args, "subject", str)
    body = _require(args, "body", str)
    if "@" not in to:
        raise ValueError(f"not an email address: {to!r}")
    message_id = _derived_id("msg", ctx.idempotency_key)
    with payments.connection() as conn, payments.transaction(conn):
        conn.execute(
            """INSERT INTO outbox (message_id, idempotency_key, to_addr, subject, body, run_id)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (idempotency_key) DO NOTHING""",
            (message_id, ctx.idempotency_key, to, subject, body, ctx.run_id),
        )
        row = conn.execute(
            "SELECT message_id FROM outbox WHERE idempotency_key = ?", (ctx.idempotency_key,)
        ).fetchone()
    return {"message_id": row["message_id"]}
