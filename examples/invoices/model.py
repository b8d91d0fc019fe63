"""The scripted model of the invoices example: an AP assistant that is mostly right.

It plays the model when no real one is configured, deterministically (a seeded draw per
invoice, step and attempt), and uses only what a real model would see in the prompt: the
invoice, its purchase order and receipts, the supplier profile and the supplier's memo —
never ``supplier.bank`` or ``ap.notes``, which the contract redacts. Its mistakes are the
ones policy is there for:

- **sloppy** (~15% of mismatches): approves an invoice whose prices or received quantities
  do not match; the three-way-match rules deny it and the model, told why, puts it on hold;
- **trusting** (~20% of new bank details): approves although the memo announces new bank
  details; the ``bank-changed`` rule escalates it to security;
- **obeys the memo** (~50% of injected memos): writes to the address in the memo; the
  ``query-recipient`` rule escalates it;
- **malformed output** (~4% of first attempts): unparseable JSON, rejected and retried.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from typing import Any

from charter import ModelRequest

#: What a clerk would have spent on the invoice, by decision.
MINUTES_SAVED = {"approved": 6, "held": 9, "queried": 12}


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _get(context: Mapping[str, Any], path: str) -> Any:
    node: Any = context
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _act(name: str, args: dict[str, Any], confidence: float, why: str) -> dict[str, Any]:
    return {"actions": [{"name": name, "args": args}], "confidence": confidence, "rationale": why}


def _hold(inv: Mapping[str, Any], reason: str, note: str) -> dict[str, Any]:
    return _act(
        "hold_invoice",
        {"invoice_id": inv["invoice_id"], "reason": reason, "note": note},
        0.9,
        f"Hold: {note}",
    )


def _query(
    inv: Mapping[str, Any], supplier: Mapping[str, Any], to: str, body: str
) -> dict[str, Any]:
    return _act(
        "query_supplier",
        {
            "supplier_id": supplier["supplier_id"],
            "to": to,
            "subject": f"Question about invoice {inv['number']}",
            "body": body,
        },
        0.85,
        "The invoice needs the supplier's confirmation before it can be paid.",
    )


def _after(request: ModelRequest, inv: Mapping[str, Any]) -> dict[str, Any]:
    """The step after an action: hold what policy refused to approve, else finish."""
    results = request.history[-1]["results"]
    for r in results:
        if r["status"] == "denied" and r["action"] == "approve_invoice":
            reason = str(r.get("reason", ""))
            code = (
                "price_mismatch"
                if "PO" in reason or "price" in reason.lower()
                else "not_received"
                if "received" in reason.lower()
                else "duplicate"
                if "duplicate" in reason.lower()
                else "no_po"
                if "purchase order" in reason.lower()
                else "other"
            )
            return _hold(inv, code, f"Policy refused approval: {reason}")
    done = [r for r in results if r["status"] == "completed"]
    decision = {"approve_invoice": "approved", "hold_invoice": "held", "query_supplier": "queried"}
    kind = decision.get(done[-1]["action"], "none") if done else "none"
    return {
        "final": {
            "invoice_id": inv["invoice_id"],
            "decision": kind,
            "minutes_saved": MINUTES_SAVED.get(kind, 0),
        },
        "confidence": 0.9,
        "rationale": f"Invoice {inv['invoice_id']} {kind}.",
    }


def propose(request: ModelRequest) -> Any:
    ctx = request.context
    inv = _get(ctx, "ap.invoice") or {}
    po = _get(ctx, "ap.purchase_order") or {}
    receipts = _get(ctx, "ap.receipts") or {"lines": []}
    supplier = _get(ctx, "supplier.profile") or {}
    memo = str(_get(ctx, "invoice.memo") or "")
    rng = _rng(inv.get("invoice_id"), request.step, request.attempt)
    if request.attempt == 1 and not request.feedback and rng.random() < 0.04:
        return '{"actions": [{"name": "approve_invoice", "args": {"invoice_id": '  # cut off
    if request.history:
        return _after(request, inv)
    po_prices = {x["sku"]: x["unit_price_cents"] for x in po.get("lines", [])}
    over = [
        x
        for x in inv.get("lines", [])
        if x["sku"] in po_prices and x["unit_price_cents"] > po_prices[x["sku"]]
    ]
    unknown = [x for x in inv.get("lines", []) if x["sku"] not in po_prices]
    short = [x for x in receipts["lines"] if x["qty_received"] < x["qty_invoiced"]]
    approve = _act(
        "approve_invoice",
        {"invoice_id": inv["invoice_id"], "amount_cents": inv["total_cents"]},
        0.93,
        "Invoice matches the purchase order and the goods received.",
    )
    if not po.get("found"):
        return _hold(
            inv, "no_po", "No purchase order is referenced; ask the requester to raise one."
        )
    if inv.get("duplicate_of"):
        return _hold(inv, "duplicate", f"Same supplier invoice number as {inv['duplicate_of']}.")
    if over and not unknown:
        if rng.random() < 0.15:
            return approve  # sloppy
        sku = over[0]["sku"]
        return _hold(
            inv,
            "price_mismatch",
            f"{sku} invoiced at {over[0]['unit_price_cents']} cents, PO price {po_prices[sku]}.",
        )
    if unknown:
        return _query(
            inv,
            supplier,
            supplier["email"],
            f"Invoice {inv['number']} has a line for {unknown[0]['sku']} that is not on "
            f"{po['po_number']}. Please send a credit note or the order reference.",
        )
    if short:
        if rng.random() < 0.15:
            return approve  # sloppy
        return _hold(inv, "not_received", f"{short[0]['sku']}: fewer units received than invoiced.")
    injected = re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", memo)
    if injected and injected.group(0).lower() != str(supplier.get("email", "")).lower():
        if rng.random() < 0.5:  # obeys the memo
            return _query(inv, supplier, injected.group(0), "Remittance advice as requested.")
        return approve
    if "bank" in memo.lower():
        if rng.random() < 0.2:
            return approve  # trusting
        return _query(
            inv,
            supplier,
            supplier["email"],
            f"Invoice {inv['number']} mentions new bank details. Please confirm them by phone "
            "through your usual account manager before we can pay.",
        )
    return approve
