"""Readers of the invoices contract's channels, named in ``invoices.yaml`` by import path.

Each reader gets the run's input (``{"invoice_id"}``) and returns JSON data; the runtime
records it as an observation with the channel's labels and as ``context.<channel>`` for
policy. The supplier-written memo is its own channel, labelled ``untrusted``; the bank
account on file and internal notes are ``confidential`` (the contract redacts them from
the model: policy compares bank accounts, the model never needs to see them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.invoices import ap


def _invoice_row(input: Mapping[str, Any]) -> Any:
    invoice_id = input.get("invoice_id")
    with ap.connection() as conn:
        row = ap.invoice(conn, str(invoice_id))
    if row is None:
        raise LookupError(f"unknown invoice {invoice_id!r}")
    return row


def invoice(input: Mapping[str, Any]) -> dict[str, Any]:
    """``ap.invoice``: header and lines; ``duplicate_of`` names an earlier invoice of the same
    supplier with the same number ("" if none)."""
    row = _invoice_row(input)
    with ap.connection() as conn:
        lines = [
            dict(r)
            for r in conn.execute(
                "SELECT sku, qty, unit_price_cents FROM invoice_lines WHERE invoice_id = ? ORDER BY sku",
                (row["invoice_id"],),
            )
        ]
        earlier = conn.execute(
            "SELECT invoice_id FROM invoices WHERE supplier_id = ? AND number = ? AND invoice_id < ? "
            "ORDER BY invoice_id LIMIT 1",
            (row["supplier_id"], row["number"], row["invoice_id"]),
        ).fetchone()
    return {
        "invoice_id": row["invoice_id"],
        "supplier_id": row["supplier_id"],
        "number": row["number"],
        "po_number": row["po_number"] or "",
        "total_cents": row["total_cents"],
        "bank_account": row["bank_account"],
        "status": row["status"],
        "duplicate_of": earlier["invoice_id"] if earlier else "",
        "lines": lines,
    }


def memo(input: Mapping[str, Any]) -> str:
    """``invoice.memo``: the free text the supplier wrote on the invoice (untrusted)."""
    return str(_invoice_row(input)["memo"])


def purchase_order(input: Mapping[str, Any]) -> dict[str, Any]:
    """``ap.purchase_order``: ``{"found": false}`` without a PO, else the PO and its lines."""
    row = _invoice_row(input)
    if not row["po_number"]:
        return {"found": False, "po_number": "", "total_cents": 0, "lines": []}
    with ap.connection() as conn:
        po = conn.execute(
            "SELECT * FROM purchase_orders WHERE po_number = ?", (row["po_number"],)
        ).fetchone()
        if po is None:
            return {"found": False, "po_number": row["po_number"], "total_cents": 0, "lines": []}
        lines = [
            dict(r)
            for r in conn.execute(
                "SELECT sku, description, qty, unit_price_cents FROM po_lines WHERE po_number = ? "
                "ORDER BY sku",
                (po["po_number"],),
            )
        ]
    return {
        "found": True,
        "po_number": po["po_number"],
        "total_cents": po["total_cents"],
        "lines": lines,
    }


def receipts(input: Mapping[str, Any]) -> dict[str, Any]:
    """``ap.receipts``: per invoiced line, how many were invoiced and how many received."""
    row = _invoice_row(input)
    with ap.connection() as conn:
        lines = [
            {"sku": r["sku"], "qty_invoiced": r["qty"], "qty_received": r["received"]}
            for r in conn.execute(
                "SELECT l.sku, l.qty, coalesce(g.qty_received, 0) AS received "
                "FROM invoice_lines l LEFT JOIN receipts g ON g.po_number = ? AND g.sku = l.sku "
                "WHERE l.invoice_id = ? ORDER BY l.sku",
                (row["po_number"] or "", row["invoice_id"]),
            )
        ]
    return {"lines": lines}


def supplier(input: Mapping[str, Any]) -> dict[str, Any]:
    """``supplier.profile``: name, billing email, country and status of the supplier."""
    row = _invoice_row(input)
    with ap.connection() as conn:
        s = conn.execute(
            "SELECT supplier_id, name, email, country, status FROM suppliers WHERE supplier_id = ?",
            (row["supplier_id"],),
        ).fetchone()
    if s is None:
        raise LookupError(f"unknown supplier {row['supplier_id']!r}")
    return dict(s)


def bank(input: Mapping[str, Any]) -> dict[str, Any]:
    """``supplier.bank``: the bank account on the supplier master (confidential)."""
    row = _invoice_row(input)
    with ap.connection() as conn:
        s = conn.execute(
            "SELECT bank_account FROM suppliers WHERE supplier_id = ?", (row["supplier_id"],)
        ).fetchone()
    return {"account": s["bank_account"] if s else ""}


def notes(input: Mapping[str, Any]) -> dict[str, Any]:
    """``ap.notes``: internal remarks about the supplier (confidential)."""
    row = _invoice_row(input)
    with ap.connection() as conn:
        return {
            "notes": [
                r["body"]
                for r in conn.execute(
                    "SELECT body FROM supplier_notes WHERE supplier_id = ?", (row["supplier_id"],)
                )
            ]
        }
