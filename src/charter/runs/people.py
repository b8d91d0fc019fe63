"""What people do to runs: decide reviews and cancel runs.

A person's action is one event appended to the run's ledger against the sequence number
the person saw (a reviewer who decided on stale information loses the race instead of
overwriting it), and it re-queues the run so a worker takes the next step. Nothing here
executes anything: an approval answers one decision about one exact action (its digest),
and the step machine decides that action again before it runs (docs/runs.md, "What an
approval authorises").

With a :class:`~charter.ledger.signing.Signer`, the verdict or cancel carries the person's
Ed25519 signature over exactly what they decided, checked offline by ``charter verify
--signatures`` (docs/runs.md, "Tamper evidence").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from charter import jsontext
from charter.errors import UsageError
from charter.ledger.events import ReviewDecided, RunCancelled
from charter.ledger.signing import Signer, cancel_message, review_message
from charter.ledger.store import Store
from charter.primitives import format_time, parse_time
from charter.runs.catalog import Catalog
from charter.runs.state import RunState, action_digest
from charter.runs.steps import recordable


def _text(*fields: tuple[str, str]) -> None:
    for text, what in fields:
        problem = jsontext.text_problem(text, what)
        if problem:
            raise UsageError(problem)


class People:
    """Reviewers' verdicts and operators' cancels, each one event in the run's ledger."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        clock: Callable[[], datetime],
        state_of: Callable[[str], RunState],
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.state_of = state_of

    def decide_review(
        self,
        review_id: str,
        verdict: str,
        *,
        by: str,
        comment: str = "",
        args: Mapping[str, Any] | None = None,
        signer: Signer | None = None,
    ) -> str:
        """Record a reviewer's verdict on a pending review, bound to the exact action it saw.

        Edited arguments are validated against the action's schema (formats included)
        before anything is written; the run then decides them from scratch. With
        ``signer``, the verdict is signed as ``by``.
        """
        if verdict not in ("approve", "reject"):
            raise UsageError(f"verdict must be approve or reject, got {verdict!r}")
        if args is not None and verdict != "approve":
            raise UsageError("edited arguments only make sense with approve")
        if not by.strip():
            raise UsageError("a verdict needs the reviewer's identity (by)")
        if verdict == "reject" and not comment.strip():
            # the model and the audit trail both need the reason
            raise UsageError("a rejection needs a comment saying why (the model sees it)")
        _text((by, "reviewer"), (comment, "comment"))
        review = self.store.get_review(review_id)
        if review.status == "cancelled":
            raise UsageError(f"review {review.review_id} was cancelled: run {review.run_id} ended")
        if review.status != "pending":
            raise UsageError(
                f"review {review.review_id} was already decided ({review.verdict} by {review.decided_by})"
            )
        state = self.state_of(review.run_id)
        if state.is_terminal:
            raise UsageError(
                f"run {state.run_id} already ended ({state.status}); nothing to review"
            )
        req = state.review
        if req is None or req.review_id != review.review_id:
            raise UsageError(
                f"review {review.review_id} is not the one run {review.run_id} is waiting for"
            )
        if req.due_at and parse_time(req.due_at) <= self.clock():
            # fail closed: past its SLA the review's on_timeout applies, whoever looks first
            raise UsageError(
                f"review {req.review_id} expired at {req.due_at}; its on_timeout "
                f"({req.on_timeout}) applies when a worker next looks at run {review.run_id}"
            )
        edited: dict[str, Any] | None = None
        digest = req.digest
        if args is not None:
            if req.kind != "action" or req.action is None:
                raise UsageError("only action reviews take edited arguments")
            contract = self.catalog.contract_for(state.policy_hash)
            edited = recordable(dict(args), "edited args", UsageError, "argument_bytes")
            errors = list(contract.actions[req.action].validator.iter_errors(edited))
            if errors:
                raise UsageError(
                    f"edited args for {req.action} are invalid: "
                    + "; ".join(e.message for e in errors)
                )
            digest = action_digest(review.run_id, req.step, req.action, edited)
        decided_at = format_time(self.clock())
        signature = None
        if signer is not None:
            signature = signer.sign(
                review_message(
                    review.run_id, req.review_id, digest, verdict, by, decided_at, comment, edited
                )
            )
        event = ReviewDecided(
            req.review_id, verdict, by, decided_at, digest, comment, edited, signature=signature
        )
        self.store.append(
            review.run_id,
            [event],
            expected_seq=state.seq,
            at=format_time(self.clock()),
            status="queued",
            wake_at=None,
        )
        return review.run_id

    def cancel(self, run_id: str, *, by: str, reason: str, signer: Signer | None = None) -> None:
        """End a run that has not ended; its pending actions never execute. With ``signer``,
        the cancel is signed as ``by`` (over the time it is recorded at)."""
        _text((by, "by"), (reason, "reason"))
        state = self.state_of(run_id)
        if state.is_terminal:
            raise UsageError(f"run {state.run_id} already ended ({state.status})")
        at = format_time(self.clock())
        signature = None
        if signer is not None:
            signature = signer.sign(cancel_message(state.run_id, by, reason, at))
        self.store.append(
            state.run_id,
            [RunCancelled(by, reason, signature=signature)],
            expected_seq=state.seq,
            at=at,
            status="cancelled",
            wake_at=None,
        )
