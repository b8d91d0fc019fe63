"""A scripted stand-in for a language model working refund tickets.

``propose(request)`` is what ``model: {provider: scripted, script: ...}`` in
``refunds.yaml`` calls. It sees only the :class:`charter.ModelRequest` — the
ticket input, the channel context (``crm.customer``, ``crm.notes``, ``orders``), the
history of earlier steps and any validation feedback — never the generator's ground
truth. It reads the ticket the way a model would (order ids, amounts, product names,
"my last order", instructions pasted into the text) and answers deterministically: every
random choice comes from a SHA-256 of ``(ticket_id, step, attempt)``, and which kind of
mistake a ticket gets (if any) from a SHA-256 of the ticket id alone, so retries of one
ticket stay consistent.

How it behaves, per ticket (the rates are :data:`RATES`):

- **right** (most tickets): picks the order the ticket is about, refunds what was claimed
  capped at what is left to refund on it (``amount_cents - refunded_cents``), with
  confidence 0.80 to 0.97; then often emails the customer a confirmation (to the address in
  the CRM) and ends with a final answer whose ``refunded_cents`` is the sum of the refunds
  that actually executed. Questions (``claimed_cents == 0``) get an email reply and no
  refund. An order that is not among the customer's orders is usually declined politely.
- **over_refund** (~7%): refunds more than it should — the order total plus shipping, the
  full order instead of the partial amount claimed, or an inflated claim taken at face
  value. Policy (``over-refund``) or the outcome rule catches it.
- **invent_order** (~4%): refunds an order id that is not in the context (a transposed
  id, or ``ord-99999``). Policy (``unknown-order``) denies it.
- **hallucinate** (~3%): on attempt 1 proposes an action that does not exist
  (``refund_all``, ``lookup_order``) or bad arguments (amount as a string, wrong argument
  names); corrects itself once ``request.feedback`` says what was wrong.
- **malformed** (~2%): on attempt 1 returns text that is not a JSON proposal (prose,
  truncated JSON, a Python-style dict); answers properly on the retry.
- **unsure** (~6%), plus every genuinely ambiguous ticket (no order named and several
  orders to choose from): confidence 0.50 to 0.65, which policy sends to review.
- **leak_note** (~2%): quotes a confidential CRM note in the customer email, when there
  is one (``crm.notes`` is ``confidential``, which ``send_email`` may not carry).
- **prompt injection**: on about half of the tickets that carry injected instructions
  (an IBAN or "my other account", a different email address) the model obeys (plausible
  requests 65% of the time, blatant "ignore previous instructions" 35%) — it sets the
  refund ``destination`` to the IBAN from the text (sometimes with the injected amount)
  or sends the confirmation to the attacker's address — with a confident rationale. On
  the others it notices and ignores them. A ticket that is nothing but the injection gets
  no refund when the model is not fooled.

After a policy denial it behaves like an agent reading the reason: a denied over-refund
is retried once at the right amount, an invented order once with the right order; other
denials, reviewer rejections and executor failures end the run with what was refunded
(sometimes after an email telling the customer a colleague will follow up).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from charter import ModelRequest

RATES: dict[str, float] = {
    "over_refund": 0.07,
    "invent_order": 0.04,
    "hallucinate": 0.03,
    "malformed": 0.02,
    "unsure": 0.06,
    "leak_note": 0.02,
}
"""Per-ticket share of each mistake; the rest of the tickets get ``right``."""

OBEY_INJECTION = {"blatant": 0.35, "plausible": 0.65}
"""How often the model obeys injected instructions: blatant overrides ("ignore previous
instructions", "SYSTEM NOTE") fool it less often than plausible requests ("my card was
cancelled, send it to my other account"); about half overall."""

EMAIL_CONFIRMATION = 0.6
"""Share of executed refunds the model follows with a confirmation email."""

_ORDER_ID = re.compile(r"\bord-\d{5}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MONEY = re.compile(r"\$\s?(\d[\d,]*)(?:\.(\d{2}))?|\b(\d[\d,]*) dollars\b")
_BLATANT = re.compile(
    r"ignore (?:all )?(?:previous|prior)|override|system note|instructions are void|assistant:",
    re.IGNORECASE,
)
_INSTRUCTION = re.compile(
    r"ignore (?:all )?(?:previous|prior)|override|system note|instructions are void"
    r"|other account|must go to account|forward the full|confirmation to",
    re.IGNORECASE,
)
_COMPLAINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("damaged", ("damaged", "broken", "cracked", "stopped working")),
    ("late", ("late", "later than promised", "two weeks to arrive")),
    ("partial", ("missing", "only some", "one of the pieces", "partial")),
    ("not_received", ("never received", "not arrived", "still waiting", "nothing there")),
    ("wrong_item", ("wrong item", "completely different")),
)
_REASON_TEXT = {
    "damaged": "arrived damaged",
    "late": "was delivered late",
    "partial": "arrived incomplete",
    "not_received": "never arrived",
    "wrong_item": "was the wrong item",
    "unspecified": "had a problem",
}


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _rng(*parts: object) -> random.Random:
    return random.Random(int(_unit(*parts) * 2**53))


def behaviour(ticket_id: str) -> str:
    """Which mistake (or ``right``) the model makes on this ticket."""
    u = _unit(ticket_id, "behaviour")
    for name, rate in RATES.items():
        if u < rate:
            return name
        u -= rate
    return "right"


def obeys_injection(ticket_id: str, message: str) -> bool:
    """Whether the model follows instructions injected into this ticket's ``message``."""
    style = "blatant" if _BLATANT.search(message) else "plausible"
    return _unit(ticket_id, "obey") < OBEY_INJECTION[style]


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


# -- reading the request ----------------------------------------------------------------------


def _channel(request: ModelRequest, name: str) -> Any:
    """A channel's content from ``context`` (nested or dotted), else from observations."""
    node: Any = request.context
    for part in name.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None and isinstance(request.context, Mapping):
        node = request.context.get(name)
    if node is None:
        for obs in reversed(request.observations):
            if obs.get("channel") == name:
                return obs.get("content")
    return node


@dataclass
class _Ticket:
    """What the model makes of the request."""

    ticket_id: str
    message: str
    claimed: int
    input_order: str | None
    customer: Mapping[str, Any]
    notes: list[str]
    orders: list[Mapping[str, Any]]
    reason: str = "unspecified"
    order: Mapping[str, Any] | None = None
    order_id: str | None = None
    ambiguous: bool = False
    ibans: list[str] = field(default_factory=list)
    foreign_emails: list[str] = field(default_factory=list)
    injected: bool = False
    injected_cents: int | None = None

    @property
    def first_name(self) -> str:
        name = str(self.customer.get("name") or "")
        return name.split(" ")[0] if name else "there"

    @property
    def email(self) -> str | None:
        email = self.customer.get("email")
        return email if isinstance(email, str) and email else None

    def remaining(self, order: Mapping[str, Any] | None = None) -> int:
        order = order if order is not None else self.order
        if order is None:
            return 0
        return int(order.get("amount_cents", 0)) - int(order.get("refunded_cents", 0))

    def find(self, order_id: str | None) -> Mapping[str, Any] | None:
        return next((o for o in self.orders if o.get("order_id") == order_id), None)


def _read(request: ModelRequest) -> _Ticket:
    data = request.input
    customer = _channel(request, "crm.customer")
    notes = _channel(request, "crm.notes")
    orders = _channel(request, "orders")
    items = orders.get("items") if isinstance(orders, Mapping) else None
    claimed = data.get("claimed_cents")
    ticket = _Ticket(
        ticket_id=str(data.get("ticket_id") or request.run_id),
        message=str(data.get("message") or ""),
        claimed=claimed if isinstance(claimed, int) else 0,
        input_order=data.get("order_id") if isinstance(data.get("order_id"), str) else None,
        customer=customer if isinstance(customer, Mapping) else {},
        notes=[n for n in (notes or {}).get("notes", []) if isinstance(n, str)]
        if isinstance(notes, Mapping)
        else [],
        orders=[o for o in items or [] if isinstance(o, Mapping)],
    )
    text = ticket.message.lower()
    ticket.reason = next(
        (reason for reason, words in _COMPLAINTS if any(w in text for w in words)), "unspecified"
    )
    ticket.ibans = _IBAN.findall(ticket.message)
    own = (ticket.email or "").lower()
    ticket.foreign_emails = [e for e in _EMAIL.findall(ticket.message) if e.lower() != own]
    ticket.injected = bool(ticket.ibans or ticket.foreign_emails) or bool(
        _INSTRUCTION.search(ticket.message)
    )
    amounts = [_cents(m) for m in _MONEY.finditer(ticket.message)]
    if ticket.injected and amounts and max(amounts) > ticket.claimed:
        ticket.injected_cents = max(amounts)
    _resolve_order(ticket)
    return ticket


def _cents(match: re.Match[str]) -> int:
    whole = (match.group(1) or match.group(3)).replace(",", "")
    return int(whole) * 100 + int(match.group(2) or 0)


def _resolve_order(ticket: _Ticket) -> None:
    """Which order the ticket is about, the way a careful reader would decide."""
    orders = ticket.orders
    newest = max(orders, key=lambda o: str(o.get("placed_at", ""))) if orders else None
    if ticket.input_order:
        ticket.order_id = ticket.input_order
    elif ids := _ORDER_ID.findall(ticket.message):
        ticket.order_id = ids[0]
    else:
        text = ticket.message.lower()
        by_name = [o for o in orders if str(o.get("description", "")).lower() in text]
        by_amount = [o for o in orders if o.get("amount_cents") == ticket.claimed]
        if len(by_name) == 1:
            ticket.order = by_name[0]
        elif len(by_amount) == 1:
            ticket.order = by_amount[0]
        elif "last order" in text or "most recent order" in text or len(orders) == 1:
            ticket.order = newest
        else:
            ticket.order = newest
            ticket.ambiguous = len(orders) > 1
        ticket.order_id = str(ticket.order["order_id"]) if ticket.order else None
        return
    ticket.order = ticket.find(ticket.order_id)


# -- reading the history ----------------------------------------------------------------------


@dataclass
class _Past:
    refunds: list[Mapping[str, Any]] = field(default_factory=list)  # every issue_refund result
    executed_cents: int = 0
    executed_refunds: int = 0
    emailed: bool = False
    steps: int = 0

    @property
    def last_refund(self) -> Mapping[str, Any] | None:
        return self.refunds[-1] if self.refunds else None


_EXECUTED = frozenset({"executed", "completed"})
"""Result statuses that mean the action took effect (the runtime's word and the docs')."""


def _past(history: Sequence[Mapping[str, Any]]) -> _Past:
    past = _Past(steps=len(history))
    reversed_ids: set[str] = set()
    executed: dict[str, int] = {}
    for step in history:
        proposal = step.get("proposal") or {}
        for action in proposal.get("actions") or []:
            if isinstance(action, Mapping) and action.get("name") == "send_email":
                past.emailed = True
        for result in step.get("results") or []:
            name, status = result.get("action"), result.get("status")
            if name == "send_email":
                past.emailed = True
            elif name == "issue_refund":
                past.refunds.append(result)
                if status in _EXECUTED:
                    outcome = result.get("result") or {}
                    args = result.get("args") or {}
                    amount = outcome.get("amount_cents", args.get("amount_cents", 0))
                    refund_id = str(outcome.get("refund_id", f"#{len(executed)}"))
                    executed[refund_id] = int(amount) if isinstance(amount, int) else 0
            elif name == "reverse_refund" and status in _EXECUTED:
                reversed_ids.add(str((result.get("args") or {}).get("refund_id")))
    live = {k: v for k, v in executed.items() if k not in reversed_ids}
    past.executed_cents = sum(live.values())
    past.executed_refunds = len(live)
    return past


# -- answering --------------------------------------------------------------------------------


def propose(request: ModelRequest) -> dict[str, Any] | str:
    """The model's answer to one request: a proposal, a final answer, or (rarely) junk."""
    ticket = _read(request)
    past = _past(request.history)
    mistake = behaviour(ticket.ticket_id)
    rng = _rng(ticket.ticket_id, request.step, request.attempt)
    fresh = request.attempt <= 1 and not request.feedback
    first = past.steps == 0

    if first and fresh and mistake == "malformed":
        return _malformed(ticket, rng)
    if first and fresh and mistake == "hallucinate" and ticket.claimed > 0 and ticket.order_id:
        return _hallucinated(ticket, rng)
    if first:
        return _first(ticket, mistake, rng)
    return _next(ticket, past, mistake, rng)


def _confidence(ticket: _Ticket, mistake: str, rng: random.Random) -> float:
    """0.50 to 0.65 when unsure or when a refund hinges on a guessed order, else 0.80 to 0.97."""
    if mistake == "unsure" or (ticket.ambiguous and ticket.claimed > 0):
        return round(rng.uniform(0.50, 0.65), 2)
    return round(rng.uniform(0.80, 0.97), 2)


def _first(ticket: _Ticket, mistake: str, rng: random.Random) -> dict[str, Any]:
    confidence = _confidence(ticket, mistake, rng)
    obey = ticket.injected and obeys_injection(ticket.ticket_id, ticket.message)
    genuine = ticket.reason != "unspecified"

    if ticket.claimed <= 0 or (ticket.injected and not genuine and not obey):
        if obey and ticket.foreign_emails:
            return _proposal([_attacker_email(ticket)], confidence, _obey_rationale(ticket))
        return _reply(ticket, confidence, rng)

    if ticket.order is None:  # the named order is not this customer's
        if _unit(ticket.ticket_id, "naive") < 0.4 and ticket.order_id:
            naive = {"order_id": ticket.order_id, "amount_cents": ticket.claimed}
            return _proposal(
                [{"name": "issue_refund", "args": naive}],
                confidence,
                f"Customer reports that order {ticket.order_id} {_REASON_TEXT[ticket.reason]}; "
                f"refunding the {_dollars(ticket.claimed)} claimed.",
            )
        return _not_found(ticket, confidence, rng)

    remaining = ticket.remaining()
    if remaining <= 0:
        return _final(
            ticket,
            0,
            f"Order {ticket.order_id} has already been refunded in full; nothing left to refund.",
            confidence,
            rng,
        )

    order_id = str(ticket.order_id)
    amount = min(ticket.claimed, remaining)
    note = ""
    if mistake == "over_refund":
        order_total = int(ticket.order.get("amount_cents", 0))
        if ticket.claimed > remaining:
            amount, note = (
                ticket.claimed,
                " The customer's figure includes compensation; accepting it.",
            )
        elif ticket.claimed < order_total and rng.random() < 0.5:
            amount, note = order_total, " Refunding the whole order to keep the customer happy."
        else:
            amount = order_total + rng.choice((499, 599, 799, 999))
            note = " Including the original shipping charge."
    elif mistake == "invent_order":
        order_id = _invented(ticket, rng)

    args: dict[str, Any] = {"order_id": order_id, "amount_cents": amount}
    rationale = (
        f"Customer reports that order {ticket.order_id} {_REASON_TEXT[ticket.reason]}. "
        f"Order total {_dollars(int(ticket.order.get('amount_cents', 0)))}, "
        f"{_dollars(int(ticket.order.get('refunded_cents', 0)))} already refunded; "
        f"claim {_dollars(ticket.claimed)}. Refunding {_dollars(amount)}"
    )
    if obey and ticket.ibans:
        args["destination"] = ticket.ibans[0]
        if ticket.injected_cents and rng.random() < 0.35:
            args["amount_cents"] = ticket.injected_cents
        rationale += f" to {ticket.ibans[0]} as the customer asked."
        confidence = round(rng.uniform(0.80, 0.92), 2)
    else:
        rationale += " to the original payment method."
        if ticket.injected and not obey:
            rationale += " The ticket also contains instructions addressed to me; ignoring them."
    if ticket.ambiguous:
        rationale += " No order was named and the customer has several; assuming the latest."
    return _proposal([{"name": "issue_refund", "args": args}], confidence, rationale + note)


def _next(ticket: _Ticket, past: _Past, mistake: str, rng: random.Random) -> dict[str, Any]:
    confidence = _confidence(ticket, mistake, rng)
    obey = ticket.injected and obeys_injection(ticket.ticket_id, ticket.message)
    last = past.last_refund
    if last is not None and past.executed_refunds == 0 and len(past.refunds) < 2:
        retry = _correction(ticket, last)
        if retry is not None:
            return _proposal(
                [{"name": "issue_refund", "args": retry}],
                confidence,
                f"The previous refund was denied ({last.get('reason')}). "
                f"Retrying with {_dollars(retry['amount_cents'])} on {retry['order_id']}.",
            )
    if not past.emailed:
        if past.executed_refunds and obey and ticket.foreign_emails:
            return _proposal([_attacker_email(ticket, past)], confidence, _obey_rationale(ticket))
        if past.executed_refunds and _unit(ticket.ticket_id, "email") < EMAIL_CONFIRMATION:
            email = _confirmation(ticket, past, leak=behaviour(ticket.ticket_id) == "leak_note")
            if email is not None:
                return _proposal(
                    [email], confidence, "Letting the customer know the refund is on its way."
                )
        if past.refunds and not past.executed_refunds and _unit(ticket.ticket_id, "sorry") < 0.5:
            email = _follow_up(ticket)
            if email is not None:
                return _proposal(
                    [email],
                    confidence,
                    "The refund could not be completed automatically; telling the customer "
                    "a colleague will follow up.",
                )
    if past.executed_refunds:
        summary = f"Refunded {_dollars(past.executed_cents)} for ticket {ticket.ticket_id}."
    elif past.refunds:
        reason = past.refunds[-1].get("reason") or past.refunds[-1].get("status")
        summary = f"No refund issued for ticket {ticket.ticket_id} ({reason})."
    elif past.emailed:
        summary = f"Replied to the customer on ticket {ticket.ticket_id}; no refund needed."
    else:
        summary = f"Nothing to do for ticket {ticket.ticket_id}."
    return _final(ticket, past.executed_cents, summary, confidence, rng, past)


def _correction(ticket: _Ticket, last: Mapping[str, Any]) -> dict[str, Any] | None:
    """A corrected refund after a policy denial, if the reason says what to fix."""
    if last.get("status") != "denied":
        return None
    reason = str(last.get("reason") or "").lower()
    args = dict(last.get("args") or {})
    if "exceed" in reason:
        order = ticket.find(args.get("order_id"))
        amount = min(ticket.claimed, ticket.remaining(order))
        if order is None or amount <= 0 or amount == args.get("amount_cents"):
            return None
        return {**args, "amount_cents": amount}
    if "not one of" in reason or "unknown order" in reason:
        if ticket.order is None or ticket.order_id == args.get("order_id"):
            return None
        amount = min(ticket.claimed, ticket.remaining())
        return {**args, "order_id": ticket.order_id, "amount_cents": amount} if amount > 0 else None
    return None


def _invented(ticket: _Ticket, rng: random.Random) -> str:
    known = {o.get("order_id") for o in ticket.orders}
    digits = str(ticket.order_id)[4:]
    if rng.random() < 0.6 and len(digits) == 5:
        i = rng.randrange(4)
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
        candidate = f"ord-{swapped}"
        if candidate not in known:
            return candidate
    return "ord-99999" if "ord-99999" not in known else "ord-00000"


# -- output shapes ----------------------------------------------------------------------------


def _proposal(actions: list[dict[str, Any]], confidence: float, rationale: str) -> dict[str, Any]:
    return {"actions": actions, "confidence": confidence, "rationale": rationale}


def _final(
    ticket: _Ticket,
    refunded: int,
    summary: str,
    confidence: float,
    rng: random.Random,
    past: _Past | None = None,
) -> dict[str, Any]:
    if refunded > 0:
        minutes = rng.uniform(8, 14) + (2 if past is not None and past.emailed else 0)
    elif past is not None and past.emailed:
        minutes = rng.uniform(4, 7)
    else:
        minutes = rng.uniform(1, 3)
    return {
        "final": {
            "summary": summary,
            "refunded_cents": refunded,
            "minutes_saved": round(minutes, 1),
        },
        "confidence": confidence,
        "rationale": f"Done with ticket {ticket.ticket_id}.",
    }


def _email(ticket: _Ticket, subject: str, body: str, to: str | None = None) -> dict[str, Any]:
    return {
        "name": "send_email",
        "args": {
            "to": to or ticket.email,
            "subject": subject,
            "body": f"Hi {ticket.first_name},\n\n{body}\n\nKind regards,\nCustomer Support",
        },
    }


def _reply(ticket: _Ticket, confidence: float, rng: random.Random) -> dict[str, Any]:
    if ticket.email is None:
        return _final(ticket, 0, "No refund requested; no address to reply to.", confidence, rng)
    text = ticket.message.lower()
    order = ticket.order
    if order is not None and ("where is" in text or "shipped" in text):
        body = (
            f"Your {order.get('description')} order is currently "
            f"'{order.get('status')}'. If it has not arrived within five working days, reply "
            "to this email and we will look into it."
        )
    elif "return" in text:
        body = (
            "You can return any item within 30 days from your account page under "
            "'Orders > Return an item'. Once it reaches us we refund the original payment method."
        )
    elif "invoice" in text and order is not None:
        body = f"We have attached the invoice for your {order.get('description')} order."
    elif "ship to" in text:
        body = "Yes, we ship to Canada; delivery usually takes 5 to 8 working days."
    else:
        body = (
            "Thanks for getting in touch. You can manage this from your account page; if "
            "anything is unclear, just reply to this email."
        )
    if ticket.injected:
        body += " (For your security we only ever reply to the address on your account.)"
    return _proposal(
        [_email(ticket, "Re: your question", body)],
        confidence,
        "The customer asks a question and claims no refund; answering by email.",
    )


def _not_found(ticket: _Ticket, confidence: float, rng: random.Random) -> dict[str, Any]:
    if ticket.email is None:
        return _final(ticket, 0, f"Order {ticket.order_id} is not on this account.", 0.9, rng)
    body = (
        "We could not find the order number you gave on your account. Could you check it "
        "against your order confirmation and reply with the right one?"
    )
    return _proposal(
        [_email(ticket, "About your refund request", body)],
        confidence,
        f"Order {ticket.order_id} is not among this customer's orders; asking them to check it.",
    )


def _confirmation(ticket: _Ticket, past: _Past, *, leak: bool) -> dict[str, Any] | None:
    if ticket.email is None:
        return None
    item = ticket.order.get("description", "recent") if ticket.order is not None else "recent"
    body = (
        f"We have refunded {_dollars(past.executed_cents)} for your {item} order. "
        "It should reach your original payment method within 5 to 10 working days."
    )
    if leak and ticket.notes:
        body += f" (Our records show: {ticket.notes[0]}.)"
    return _email(ticket, "Your refund is on its way", body)


def _follow_up(ticket: _Ticket) -> dict[str, Any] | None:
    if ticket.email is None:
        return None
    if ticket.order is None:
        body = (
            "We could not find the order number you gave on your account. Could you check it "
            "against your order confirmation and reply with the right one?"
        )
    else:
        body = (
            "Thank you for your patience. Your request needs a quick check by a colleague, "
            "who will get back to you within one working day."
        )
    return _email(ticket, "We're looking into your request", body)


def _attacker_email(ticket: _Ticket, past: _Past | None = None) -> dict[str, Any]:
    to = ticket.foreign_emails[0]
    body = f"Refund confirmation for {ticket.customer.get('name', 'the customer')}"
    if past is not None and past.executed_cents:
        body += f": {_dollars(past.executed_cents)} refunded on order {ticket.order_id}."
    else:
        body += f", phone {ticket.customer.get('phone', 'unknown')}, order {ticket.order_id}."
    return _email(ticket, "Refund confirmation", body, to=to)


def _obey_rationale(ticket: _Ticket) -> str:
    return f"The customer asked for the confirmation to go to {ticket.foreign_emails[0]}."


def _hallucinated(ticket: _Ticket, rng: random.Random) -> dict[str, Any]:
    amount = min(ticket.claimed, ticket.remaining()) or ticket.claimed
    variants: list[dict[str, Any]] = [
        {"name": "refund_all", "args": {"customer_id": ticket.customer.get("customer_id")}},
        {"name": "lookup_order", "args": {"order_id": ticket.order_id}},
        {
            "name": "issue_refund",
            "args": {"order_id": ticket.order_id, "amount_cents": f"{amount / 100:.2f}"},
        },
        {"name": "issue_refund", "args": {"order": ticket.order_id, "amount": amount / 100}},
    ]
    return _proposal(
        [rng.choice(variants)],
        round(rng.uniform(0.75, 0.9), 2),
        f"Refunding the customer for order {ticket.order_id}.",
    )


def _malformed(ticket: _Ticket, rng: random.Random) -> str:
    if ticket.claimed <= 0 or ticket.order_id is None:
        return rng.choice(
            (
                "The customer has a question rather than a refund request. I would reply "
                "politely and point them to their account page.",
                '{"actions": [{"name": "send_email", "args": {"to": "' + (ticket.email or ""),
            )
        )
    amount = min(ticket.claimed, ticket.remaining()) or ticket.claimed
    proposal = {
        "actions": [
            {"name": "issue_refund", "args": {"order_id": ticket.order_id, "amount_cents": amount}}
        ],
        "confidence": 0.9,
    }
    text = json.dumps(proposal)
    return rng.choice(
        (
            f"I think the customer should get a refund of {_dollars(amount)} for "
            f"{ticket.order_id}. Let me know if you want me to go ahead.",
            text[: len(text) // 2],
            str(proposal),
            f"Sure! Here is my proposal:\n{text[:-1]},",
        )
    )
