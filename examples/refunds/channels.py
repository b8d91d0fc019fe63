"""Readers of the refunds contract's channels, named in ``refunds.yaml`` by import path.

The runtime calls each reader with the run's input and records what it returns as an
observation labelled as the contract says (``crm.customer`` is ``pii``, ``crm.notes``
``confidential``, ``orders`` unlabelled) and as ``context.<channel>`` for policy. Every
reader opens the payments database named by ``$CHARTER_DEMO_PAYMENTS`` and returns plain
JSON-serialisable data. Orders are read live, so a re-read after a refund (the contract's
``max_age`` on ``orders``) sees it in ``refunded_cents``.

An unknown customer is an error (:class:`LookupError`), not an empty record: policy must
not decide about a customer the CRM does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.refunds import payments


def _customer_id(input: Mapping[str, Any]) -> str:
    customer_id = input.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError("the input has no customer_id")
    return customer_id


def customer(input: Mapping[str, Any]) -> dict[str, Any]:
    """``crm.customer``: ``{"customer_id", "name", "email", "tier", "phone"}``.

    ``tier`` is ``standard``, ``gold`` or ``blocked``.
    """
    customer_id = _customer_id(input)
    with payments.connection() as conn:
        record = payments.get_customer(conn, customer_id)
    if record is None:
        raise LookupError(f"unknown customer {customer_id!r}")
    return record


def notes(input: Mapping[str, Any]) -> dict[str, Any]:
    """``crm.notes``: ``{"notes": [str, ...]}`` — internal remarks, oldest first, maybe none."""
    customer_id = _customer_id(input)
    with payments.connection() as conn:
        if payments.get_customer(conn, customer_id) is None:
            raise LookupError(f"unknown customer {customer_id!r}")
        return {"notes": payments.get_notes(conn, customer_id)}


def orders(input: Mapping[str, Any]) -> dict[str, Any]:
    """``orders``: the customer's orders, newest first.

    ``{"items": [{"order_id", "description", "amount_cents", "refunded_cents", "status",
    "placed_at"}]}``; ``refunded_cents`` is the sum of the order's refunds that were not
    reversed, read now.
    """
    customer_id = _customer_id(input)
    with payments.connection() as conn:
        if payments.get_customer(conn, customer_id) is None:
            raise LookupError(f"unknown customer {customer_id!r}")
        items = payments.customer_orders(conn, customer_id)
    for item in items:
        del item["customer_id"]
    return {"items": items}
