"""The ledger's vocabulary: one frozen dataclass per kind of state change.

A run's state is the fold of its events, so every fact the runtime, a replay or an
auditor needs is in an event — never only in a projection table. Events are stored as
``type`` plus a JSON object of their fields; :func:`decode` turns them back into these
classes, and an unknown type is an error rather than a silently skipped fact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from charter.errors import StoreError


@dataclass(frozen=True)
class Event:
    """Base of all events; ``TYPE`` is the stable name stored in the ledger."""

    TYPE: ClassVar[str] = ""
    #: fields added after events of this type were first written: left out of the payload
    #: while ``None``, so an event without them is stored (and hashed) exactly as before
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_data(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in self.OPTIONAL:
            if data.get(name) is None:
                data.pop(name, None)
        return data


@dataclass(frozen=True)
class RunSubmitted(Event):
    TYPE: ClassVar[str] = "run.submitted"
    contract: str
    contract_hash: str
    policy_hash: str
    input: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    submitted_at: str = ""
    #: ``provider:model`` chosen at submission over the contract's model section (``None``:
    #: the contract's); in the event so that every worker calls the same model.
    model: str | None = None
    #: who submitted the run (an API token's identity, the CLI's ``--by``); ``None``: unknown
    submitted_by: str | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("submitted_by",)


@dataclass(frozen=True)
class ChannelRead(Event):
    """A reader's result; it becomes an observation and ``context.<channel>`` for policy."""

    TYPE: ClassVar[str] = "channel.read"
    channel: str
    labels: list[str]
    content: Any
    read_at: str
    reason: str = "admit"


@dataclass(frozen=True)
class RunAdmitted(Event):
    TYPE: ClassVar[str] = "run.admitted"
    decision: dict[str, Any]
    by_review: str | None = None


@dataclass(frozen=True)
class RunRefused(Event):
    TYPE: ClassVar[str] = "run.refused"
    decision: dict[str, Any]
    reason: str = ""


@dataclass(frozen=True)
class ModelCalled(Event):
    TYPE: ClassVar[str] = "model.called"
    step: int
    attempt: int
    provider: str
    model: str
    params: dict[str, Any]
    seed: int | None
    prompt_hash: str
    prompt: str
    raw_output: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    # Added with real providers; ``None`` in ledgers written before them. Token kinds are
    # subsets: cached and cache-write tokens of input_tokens, reasoning of output_tokens.
    template_hash: str | None = None  # SHA-256 of the prompt template's text
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    price_version: str | None = None  # price table that computed cost_usd; None: unpriced
    redacted: list[dict[str, Any]] | None = None  # [{channel, labels, fields}] masked


@dataclass(frozen=True)
class ProposalAccepted(Event):
    TYPE: ClassVar[str] = "proposal.accepted"
    step: int
    actions: list[dict[str, Any]]
    confidence: float
    rationale: str
    final: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProposalRejected(Event):
    TYPE: ClassVar[str] = "proposal.rejected"
    step: int
    attempt: int
    reasons: list[str]


@dataclass(frozen=True)
class ActionDecided(Event):
    """Policy's decision on one proposed action.

    Every stored decision carries ``counts``: each answer the history gave to ``count()``
    while deciding, so a replay reproduces the decision without the live history.
    """

    TYPE: ClassVar[str] = "action.decided"
    step: int
    index: int
    action: str
    args: dict[str, Any]
    decision: dict[str, Any]


@dataclass(frozen=True)
class ReviewRequested(Event):
    TYPE: ClassVar[str] = "review.requested"
    review_id: str
    kind: str  # admit | action | outcome
    step: int | None
    action: str | None
    args: dict[str, Any] | None
    digest: str
    effect: str
    reviewers: list[str]
    reasons: list[str]
    requested_at: str
    due_at: str | None
    on_timeout: str
    decision: dict[str, Any] | None = None  # admit and outcome reviews: the decision that asked


@dataclass(frozen=True)
class ReviewDecided(Event):
    TYPE: ClassVar[str] = "review.decided"
    review_id: str
    verdict: str  # approve | reject | expired
    by: str
    decided_at: str
    digest: str
    comment: str = ""
    edited_args: dict[str, Any] | None = None
    effect: str | None = None  # for expired reviews: the on_timeout effect taken
    #: the reviewer's Ed25519 signature over the verdict (charter.ledger.signing); ``None``:
    #: unsigned, and then left out of the payload, which stays as it was before signatures
    signature: dict[str, str] | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("signature",)


@dataclass(frozen=True)
class ActionStarted(Event):
    TYPE: ClassVar[str] = "action.started"
    step: int
    action: str
    args: dict[str, Any]
    idempotency_key: str
    attempt: int
    started_at: str
    compensation: bool = False


@dataclass(frozen=True)
class ActionCompleted(Event):
    TYPE: ClassVar[str] = "action.completed"
    step: int
    action: str
    args: dict[str, Any]
    result: Any
    completed_at: str
    duration_ms: float
    compensation: bool = False
    #: ``args`` in the normal form ``count()`` matches (``None``: the same as ``args``); the
    #: projection of executed actions stores this, see :mod:`charter.policy.normalize`
    match_args: dict[str, Any] | None = None
    #: what had to change in ``result`` to record it (an executor returned a value that is
    #: not JSON text); the effect happened, so the completion is kept, see charter.jsontext
    result_changes: list[str] | None = None

    @property
    def match_form(self) -> dict[str, Any]:
        """The arguments ``count()`` matches against."""
        return self.match_args if self.match_args is not None else self.args


@dataclass(frozen=True)
class ActionFailed(Event):
    TYPE: ClassVar[str] = "action.failed"
    step: int
    action: str
    error: str
    failed_at: str
    duration_ms: float
    compensation: bool = False


@dataclass(frozen=True)
class ActionTimedOut(Event):
    """One executor call outlived the action's ``timeout``; it is retried with the same key.

    Whether the effect happened is unknown (the call may still finish in the background),
    which is why the retry reuses the idempotency key and why attempts are capped.
    """

    TYPE: ClassVar[str] = "action.timed_out"
    step: int
    action: str
    attempt: int
    timeout_s: float
    timed_out_at: str
    compensation: bool = False


@dataclass(frozen=True)
class ActionShadowed(Event):
    """A contract at autonomy level ``shadow``: the action was decided, never executed."""

    TYPE: ClassVar[str] = "action.shadowed"
    step: int
    action: str
    args: dict[str, Any]
    effect: str


@dataclass(frozen=True)
class CompensationStarted(Event):
    TYPE: ClassVar[str] = "compensation.started"
    reason: str
    steps: list[int]
    decision: dict[str, Any] | None = None  # an outcome deny: the decision that asked


@dataclass(frozen=True)
class BudgetExceeded(Event):
    TYPE: ClassVar[str] = "budget.exceeded"
    limit: str
    allowed: float
    used: float
    requested: float


@dataclass(frozen=True)
class RunCompleted(Event):
    TYPE: ClassVar[str] = "run.completed"
    outcome: dict[str, Any]
    decision: dict[str, Any]
    success: bool | None
    value: float | None
    cost_usd: float
    completed_at: str


@dataclass(frozen=True)
class RunFailed(Event):
    TYPE: ClassVar[str] = "run.failed"
    error: str
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunEscalated(Event):
    TYPE: ClassVar[str] = "run.escalated"
    reason: str
    reviewers: list[str]


@dataclass(frozen=True)
class RunCancelled(Event):
    TYPE: ClassVar[str] = "run.cancelled"
    by: str
    reason: str
    #: the operator's Ed25519 signature over the cancel (charter.ledger.signing), or ``None``
    signature: dict[str, str] | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = ("signature",)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        RunSubmitted,
        ChannelRead,
        RunAdmitted,
        RunRefused,
        ModelCalled,
        ProposalAccepted,
        ProposalRejected,
        ActionDecided,
        ReviewRequested,
        ReviewDecided,
        ActionStarted,
        ActionCompleted,
        ActionFailed,
        ActionTimedOut,
        ActionShadowed,
        CompensationStarted,
        BudgetExceeded,
        RunCompleted,
        RunFailed,
        RunEscalated,
        RunCancelled,
    )
}


def decode(type_: str, data: dict[str, Any]) -> Event:
    """Rebuild a typed event; unknown types or fields mean a newer or corrupted ledger."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise StoreError(f"unknown event type {type_!r}; is this ledger from a newer Charter?")
    try:
        return cls(**data)
    except TypeError as exc:
        raise StoreError(f"event {type_!r} has unexpected fields: {exc}") from None


@dataclass(frozen=True)
class StoredEvent:
    """An event as the ledger holds it: position, time and chain hashes included."""

    run_id: str
    seq: int
    at: str
    event: Event
    prev_hash: str
    hash: str
    #: sealed fields that could not be read (dotted paths; see charter.ledger.sealing): their
    #: values are empty stand-ins. ``unreadable_reason`` says why: ``erased`` (the subject's
    #: key was destroyed) or ``no key`` (this process has no key-encryption key)
    unreadable: tuple[str, ...] = ()
    unreadable_reason: str = ""

    @property
    def type(self) -> str:
        return self.event.TYPE
