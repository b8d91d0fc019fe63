"""A run's state, derived only by folding its events.

The live loop, ``charter replay`` and ``charter policy backtest`` all build their view of
a run with a :class:`Folder`, and build every policy request from that view with the
functions at the end of this module — one code path, so a replay sees exactly what the
policy saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from charter.contract.model import Contract
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionShadowed,
    ActionStarted,
    ActionTimedOut,
    ChannelRead,
    CompensationStarted,
    Event,
    ModelCalled,
    ProposalAccepted,
    ProposalRejected,
    ReviewDecided,
    ReviewRequested,
    RunAdmitted,
    RunCancelled,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
    RunSubmitted,
    StoredEvent,
)
from charter.policy.decision import PRECEDENCE
from charter.primitives import digest, parse_time

#: Where a run is: ``queued`` for a worker, ``running`` (admitted, being worked on),
#: ``waiting`` for a review, or ended.
RunStatus = Literal[
    "queued", "running", "waiting", "completed", "failed", "escalated", "refused", "cancelled"
]
#: How far one proposed action got (see :class:`Slot`).
SlotStatus = Literal[
    "proposed",
    "decided",
    "waiting",
    "approved",
    "edited",
    "started",
    "completed",
    "failed",
    "denied",
    "rejected",
    "shadowed",
]

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "escalated", "refused", "cancelled"})
#: The status each event that ends a run leaves it in.
TERMINAL_STATUS: dict[type[Event], RunStatus] = {
    RunRefused: "refused",
    RunCompleted: "completed",
    RunFailed: "failed",
    RunEscalated: "escalated",
    RunCancelled: "cancelled",
}


def action_digest(run_id: str, step: int | None, action: str | None, args: Any) -> str:
    """What a reviewer's approval is bound to: this run, this step, this exact action."""
    return digest({"run": run_id, "step": step, "action": action, "args": args})


@dataclass
class Slot:
    """One proposed action of the current proposal and how far it got.

    ``status``: ``proposed`` (not decided yet) → ``decided`` (allowed) | ``waiting`` (for a
    review) | ``denied`` | ``shadowed``; a review makes it ``approved`` (``edited`` when the
    approver changed the arguments) or ``rejected``; ``started`` once an executor call is
    recorded, then ``completed`` | ``failed``. An approved or edited action is decided again
    before it starts, which may send it back to ``waiting`` or to ``denied``.
    """

    index: int
    name: str
    args: dict[str, Any]
    step: int | None = None
    decision: dict[str, Any] | None = None
    review_id: str | None = None
    verdict: str | None = None  # approve | reject | expired
    approved_digest: str | None = None
    #: the effect the approval answered (``review``, ``escalate``, ``batch``), or ``allow``
    #: once an edit was re-decided as allow: a later decision stronger than this one wins
    approved_effect: str | None = None
    status: SlotStatus = "proposed"
    result: Any = None
    reason: str = ""
    attempts: int = 0
    timeouts: int = 0

    @property
    def settled(self) -> bool:
        """Nothing more will happen to this action."""
        return self.status in ("completed", "failed", "denied", "rejected", "shadowed")


@dataclass
class RunState:
    run_id: str
    contract: str = ""
    policy_hash: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    caller_context: dict[str, Any] = field(default_factory=dict)
    submitted_at: str = ""
    model_override: str | None = None  # ``provider:model`` chosen at submission, if any
    status: RunStatus = "queued"
    admitted: bool = False
    channels: dict[str, tuple[Any, str]] = field(default_factory=dict)
    observations: list[dict[str, Any]] = field(default_factory=list)
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    step: int = 0  # accepted proposals so far
    attempt: int = 1  # attempt number of the next model call for the current step
    feedback: list[str] = field(default_factory=list)
    proposal: dict[str, Any] | None = None
    slots: list[Slot] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    next_step: int = 1  # global action step counter (idempotency keys)
    executed: list[dict[str, Any]] = field(default_factory=list)
    review: ReviewRequested | None = None  # the pending review, if any
    requests: list[ReviewRequested] = field(default_factory=list)
    review_verdicts: dict[str, ReviewDecided] = field(default_factory=dict)
    compensating: bool = False
    compensation_steps: list[int] = field(default_factory=list)
    compensation_reason: str = ""
    compensated: list[int] = field(default_factory=list)
    compensation_attempts: dict[int, int] = field(default_factory=dict)
    compensation_timeouts: dict[int, int] = field(default_factory=dict)
    terminal: StoredEvent | None = None
    failed_action: str = ""
    seq: int = 0
    last_at: str = ""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def context(self) -> dict[str, Any]:
        """Caller facts, plus each channel's latest read at ``context.<channel path>``."""
        ctx: dict[str, Any] = _deep_copy(self.caller_context)
        for channel, (content, _) in sorted(self.channels.items()):
            node = ctx
            parts = channel.split(".")
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
            node[parts[-1]] = content
        return ctx

    def run_facts(self, now: datetime) -> dict[str, Any]:
        elapsed = (
            (now - parse_time(self.submitted_at)).total_seconds() if self.submitted_at else 0.0
        )
        return {
            "step": self.step,
            "model_calls": self.model_calls,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "actions": len(self.executed),
            "elapsed_s": max(0.0, elapsed),
        }


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def input_observations(contract: Contract, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The task input as observations: each channel with ``input:`` carries its field."""
    out: list[dict[str, Any]] = []
    carried: set[str] = set()
    for name, raw in sorted((contract.data.get("channels") or {}).items()):
        field_path = raw.get("input") if isinstance(raw, dict) else None
        if not field_path:
            continue
        value: Any = payload
        for part in str(field_path).split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        carried.add(str(field_path).split(".")[0])
        if value is not None:
            out.append(
                {"channel": name, "labels": list(contract.channels[name].labels), "content": value}
            )
    rest = {k: v for k, v in payload.items() if k not in carried}
    if rest:
        out.insert(0, {"channel": "input", "labels": [], "content": rest})
    return out


_Handler = Callable[["Folder", Any, StoredEvent], None]
_HANDLERS: dict[type[Event], _Handler] = {}


def _applies(*types: type[Event]) -> Callable[[_Handler], _Handler]:
    """Register a :class:`Folder` method as what an event type does to a run's state."""

    def register(handler: _Handler) -> _Handler:
        for t in types:
            _HANDLERS[t] = handler
        return handler

    return register


class Folder:
    """Applies events to a :class:`RunState`; the live loop applies each event it appends.

    One handler per event type (``_on_*``, registered with ``@_applies``); an event type
    without one (``budget.exceeded``) records a fact without changing what the run does next.
    """

    def __init__(self, contract: Contract, run_id: str) -> None:
        self.contract = contract
        self.state = RunState(run_id=run_id)

    def apply_all(self, events: Iterable[StoredEvent]) -> RunState:
        for ev in events:
            self.apply(ev)
        return self.state

    def apply(self, stored: StoredEvent) -> None:
        self.state.seq = stored.seq
        self.state.last_at = stored.at
        handler = _HANDLERS.get(type(stored.event))
        if handler is not None:
            handler(self, stored.event, stored)

    @_applies(RunSubmitted)
    def _on_submitted(self, ev: RunSubmitted, stored: StoredEvent) -> None:
        s = self.state
        s.contract, s.policy_hash = ev.contract, ev.policy_hash
        s.input, s.caller_context = dict(ev.input), dict(ev.context)
        s.submitted_at = ev.submitted_at or stored.at
        s.model_override = ev.model
        s.observations.extend(input_observations(self.contract, ev.input))

    @_applies(ChannelRead)
    def _on_channel_read(self, ev: ChannelRead, stored: StoredEvent) -> None:
        s = self.state
        s.channels[ev.channel] = (ev.content, ev.read_at)
        s.observations.append(
            {"channel": ev.channel, "labels": list(ev.labels), "content": ev.content}
        )

    @_applies(RunAdmitted)
    def _on_admitted(self, ev: RunAdmitted, stored: StoredEvent) -> None:
        s = self.state
        s.admitted = True
        s.status = "running"
        s.review = None

    @_applies(ModelCalled)
    def _on_model_called(self, ev: ModelCalled, stored: StoredEvent) -> None:
        s = self.state
        s.model_calls += 1
        s.input_tokens += ev.input_tokens
        s.output_tokens += ev.output_tokens
        s.cost_usd += ev.cost_usd

    @_applies(ProposalRejected)
    def _on_proposal_rejected(self, ev: ProposalRejected, stored: StoredEvent) -> None:
        self.state.attempt += 1
        self.state.feedback = list(ev.reasons)

    @_applies(ProposalAccepted)
    def _on_proposal_accepted(self, ev: ProposalAccepted, stored: StoredEvent) -> None:
        s = self.state
        if s.proposal is not None:
            s.history.append(_step_record(s))
        s.step = ev.step
        s.attempt = 1
        s.feedback = []
        s.proposal = {
            "actions": ev.actions,
            "confidence": ev.confidence,
            "rationale": ev.rationale,
            "final": ev.final,
        }
        s.slots = [
            Slot(index=i, name=a["name"], args=dict(a.get("args") or {}))
            for i, a in enumerate(ev.actions)
        ]

    @_applies(ActionDecided)
    def _on_action_decided(self, ev: ActionDecided, stored: StoredEvent) -> None:
        s = self.state
        if ev.index >= len(s.slots):
            # the proposal's actions were erased (charter erase): rebuild what the decision
            # itself says, so that an erased run still folds
            s.slots.extend(
                Slot(i, ev.action, dict(ev.args)) for i in range(len(s.slots), ev.index + 1)
            )
        slot = s.slots[ev.index]
        slot.step = ev.step
        slot.args = dict(ev.args)
        slot.decision = ev.decision
        s.next_step = max(s.next_step, ev.step + 1)
        effect = ev.decision["effect"]
        if effect == "deny":
            slot.status = "denied"
            slot.reason = "; ".join(ev.decision["reasons"])
        elif slot.status in ("approved", "edited"):
            # decided again before it runs: an edit is a new proposal that only `allow`
            # lets run on the approval; an approved action runs unless the decision on
            # current facts is stronger than the one the approval answered
            bound = "allow" if slot.status == "edited" else (slot.approved_effect or "review")
            if PRECEDENCE[effect] > PRECEDENCE[bound]:
                slot.status = "waiting"
                slot.verdict = None
            else:
                slot.status = "approved"
                slot.approved_effect = bound
        elif effect == "allow":
            slot.status = "decided"
        else:
            slot.status = "waiting"

    @_applies(ReviewRequested)
    def _on_review_requested(self, ev: ReviewRequested, stored: StoredEvent) -> None:
        s = self.state
        s.review = ev
        s.requests.append(ev)
        s.status = "waiting"
        if ev.kind == "action" and ev.step is not None:
            slot = self._slot(ev.step)
            if slot is not None:
                slot.review_id = ev.review_id

    @_applies(ReviewDecided)
    def _on_review_decided(self, ev: ReviewDecided, stored: StoredEvent) -> None:
        s = self.state
        s.review_verdicts[ev.review_id] = ev
        req = s.review
        s.review = None
        if not s.is_terminal:
            s.status = "running"
        if req is None or req.kind != "action":
            return
        for slot in s.slots:
            if slot.review_id != ev.review_id:
                continue
            slot.verdict = ev.verdict
            if ev.verdict == "approve":
                slot.status = "approved"
                slot.approved_digest = ev.digest
                slot.approved_effect = req.effect
                if ev.edited_args is not None:
                    slot.args = dict(ev.edited_args)
                    slot.status = "edited"
            else:
                slot.status = "rejected"
                slot.reason = ev.comment or (
                    f"review timed out ({ev.effect})"
                    if ev.verdict == "expired"
                    else "rejected by reviewer"
                )

    @_applies(ActionStarted)
    def _on_action_started(self, ev: ActionStarted, stored: StoredEvent) -> None:
        if ev.compensation:
            self.state.compensation_attempts[ev.step] = ev.attempt
            return
        slot = self._slot(ev.step)
        if slot is not None:
            slot.status = "started"
            slot.attempts = ev.attempt

    @_applies(ActionCompleted)
    def _on_action_completed(self, ev: ActionCompleted, stored: StoredEvent) -> None:
        s = self.state
        if ev.compensation:
            s.compensated.append(ev.step)
            return
        s.executed.append(
            {"step": ev.step, "name": ev.action, "args": ev.args, "result": ev.result}
        )
        s.observations.append(
            {"channel": f"action:{ev.action}", "labels": [], "content": ev.result}
        )
        slot = self._slot(ev.step)
        if slot is not None:
            slot.status = "completed"
            slot.result = ev.result

    @_applies(ActionTimedOut)
    def _on_action_timed_out(self, ev: ActionTimedOut, stored: StoredEvent) -> None:
        s = self.state
        if ev.compensation:
            s.compensation_timeouts[ev.step] = s.compensation_timeouts.get(ev.step, 0) + 1
            return
        slot = self._slot(ev.step)
        if slot is not None:
            slot.timeouts += 1
            slot.reason = f"timed out after {ev.timeout_s:g}s (attempt {ev.attempt})"

    @_applies(ActionFailed)
    def _on_action_failed(self, ev: ActionFailed, stored: StoredEvent) -> None:
        s = self.state
        if ev.compensation:
            s.compensated.append(ev.step)
            return
        slot = self._slot(ev.step)
        if slot is not None:
            slot.status = "failed"
            slot.reason = ev.error
        s.failed_action = ev.error

    @_applies(ActionShadowed)
    def _on_action_shadowed(self, ev: ActionShadowed, stored: StoredEvent) -> None:
        slot = self._slot(ev.step)
        if slot is not None:
            slot.status = "shadowed"
            slot.reason = f"shadow mode: decided {ev.effect}, not executed"

    @_applies(CompensationStarted)
    def _on_compensation_started(self, ev: CompensationStarted, stored: StoredEvent) -> None:
        s = self.state
        s.compensating = True
        s.compensation_steps = list(ev.steps)
        s.compensation_reason = ev.reason

    @_applies(RunRefused, RunCompleted, RunFailed, RunEscalated, RunCancelled)
    def _on_ended(self, ev: Event, stored: StoredEvent) -> None:
        self.state.status = TERMINAL_STATUS[type(ev)]
        self.state.terminal = stored

    def _slot(self, step: int) -> Slot | None:
        for slot in self.state.slots:
            if slot.step == step:
                return slot
        return None


def history_for_model(state: RunState) -> list[dict[str, Any]]:
    """Earlier proposals and what became of each action, including the current settled one."""
    out = list(state.history)
    if state.proposal is not None and state.slots and all(s.settled for s in state.slots):
        out.append(_step_record(state))
    return out


def _step_record(state: RunState) -> dict[str, Any]:
    """The current proposal and what became of each of its actions, as the model sees it."""
    results = []
    for slot in state.slots:
        item: dict[str, Any] = {"action": slot.name, "args": slot.args, "status": slot.status}
        if slot.status == "completed":
            item["result"] = slot.result
        else:
            item["reason"] = slot.reason
        results.append(item)
    return {"proposal": state.proposal, "results": results}


def outcome_facts(state: RunState) -> dict[str, Any]:
    """What ``outcome`` means to outcome rules: the final answer plus the executed actions."""
    final = (state.proposal or {}).get("final") or {}
    return {**final, "actions": [dict(a) for a in state.executed]}
