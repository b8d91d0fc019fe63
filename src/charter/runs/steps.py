"""The step machine: the one piece of code that moves a run forward, one step at a time.

Each call of :meth:`StepMachine.step` looks at the folded state of a leased run and takes
the next step — *expire* an overdue review, *admit* the run, *compensate* after an abort,
*think* (ask the run's :class:`~charter.runs.proposer.Proposer` for a proposal and validate
it), *act* on the next proposed action (decide it, wait for a person, or execute it), or
*finish* (outcome policy, success and value) — by applying events to the run's
:class:`~charter.runs.unit.Unit`. It never writes anywhere else: whatever happens outside
the ledger (a channel read, an executor call) happens between two commits the unit makes.

Proposals are validated, decided, reviewed, executed and recorded here whoever made them:
the contract's model or an agent outside Charter (see :mod:`charter.runs.proposer`).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from charter import jsontext
from charter.caps import CAPS
from charter.contract.model import Contract
from charter.errors import CharterError, RunStateError
from charter.execution.base import ExecutionContext
from charter.execution.executors import resolve_executor
from charter.execution.runner import CallRunner, ExecutorRaisedError, ExecutorTimeoutError
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
    ProposalAccepted,
    ProposalRejected,
    ReviewDecided,
    ReviewRequested,
    RunAdmitted,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
)
from charter.models.proposal import parse_proposal
from charter.policy.decision import PRECEDENCE, Decision
from charter.policy.normalize import match_form
from charter.primitives import format_time, import_callable, parse_time
from charter.runs import budgets
from charter.runs.decisions import decide_action, decide_admit, decide_outcome, evaluate_success
from charter.runs.failpoints import failpoint
from charter.runs.proposer import Proposer, Refused
from charter.runs.state import RunState, Slot, action_digest, outcome_facts
from charter.runs.unit import Unit
from charter.scrub import scrub


def idempotency_key(run_id: str, step: int, compensation: bool = False) -> str:
    """Stable for one action of one run, across retries and workers; a compensation of the
    step has a key of its own so undoing is applied once too."""
    return f"{run_id}:{step}" + (":compensate" if compensation else "")


def decision_record(decision: Decision, counts: list[list[Any]]) -> dict[str, Any]:
    """A decision as recorded: with the ``count()`` answers it was made on, for replay."""
    return {**decision.to_dict(), "counts": counts}


def recordable(
    value: Any, what: str, error: type[CharterError] = CharterError, cap: str = ""
) -> Any:
    """A plain JSON copy of ``value``, or ``error`` naming every field the ledger cannot hold
    (and the size, when ``cap`` names the :mod:`charter.caps` cap it must stay within)."""
    found = jsontext.problems(value, what)
    if found:
        raise error(f"{what} cannot be recorded: " + "; ".join(found))
    text = json.dumps(value)
    if cap and len(text) > CAPS[cap].limit:  # ASCII JSON: a cheap upper bound first
        size = jsontext.json_size(value)
        if size > CAPS[cap].limit:
            raise error(CAPS[cap].exceeded(size, what))
    return json.loads(text)


def error_text(exc: BaseException) -> str:
    """An exception as it may be recorded: credentials scrubbed, invalid text replaced.

    Exception messages carry text from outside (a provider's error body, a server's
    answer): the ledger is append-only, so nothing secret or unencodable may reach it.
    """
    return scrub(jsontext.sanitised_text(f"{type(exc).__name__}: {exc}"))


class StepMachine:
    """Admit, think, act, finish, expire, compensate: one step of one run per call."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        proposer_for: Callable[[Unit], Proposer],
        runner: CallRunner,
    ) -> None:
        self.clock = clock
        self.proposer_for = proposer_for
        self.runner = runner

    def fail(self, unit: Unit, exc: BaseException) -> None:
        """A reader, model or bug raised: the run fails (compensating what it did), recorded."""
        reason = f"run stopped by an error: {error_text(exc)}"
        events: list[Event] = (
            [RunFailed(reason)] if unit.state.compensating else self._abort(unit, reason)
        )
        unit.apply(events, self.clock())

    def _think(self, unit: Unit, now: datetime) -> bool:
        """Ask the run's proposer for the next proposal; validate it before policy sees it."""
        s = unit.state
        offer = self.proposer_for(unit).propose(unit, now)
        if offer is None:
            return False  # nothing to propose now: hand the run on
        if isinstance(offer, Refused):
            unit.apply(list(offer.events), now)
            return True
        proposal, reasons = parse_proposal(unit.contract, offer.raw)
        events: list[Event] = list(offer.events)
        if proposal is not None:
            events.append(
                ProposalAccepted(
                    s.step + 1,
                    proposal.actions,
                    proposal.confidence,
                    proposal.rationale,
                    proposal.final,
                )
            )
        else:
            events.append(ProposalRejected(s.step + 1, s.attempt, reasons))
            if s.attempt > unit.contract.budget.max_proposal_retries:
                events.append(
                    RunEscalated(
                        f"no valid proposal after {s.attempt} attempts: {'; '.join(reasons)}",
                        list(unit.contract.escalation.reviewers),
                    )
                )
        unit.apply(events, now)
        return True

    def step(self, unit: Unit) -> bool:
        """Take the run's next step; ``False`` when it must wait (a review, a proposal)."""
        s = unit.state
        now = self.clock()
        if s.review is not None:
            if s.review.due_at and parse_time(s.review.due_at) <= now:
                self._expire(unit, now)
                return True
            return False
        if not s.admitted:
            return self._admit(unit, now)
        if s.compensating:
            return self._compensate(unit, now)
        if s.proposal is None or (
            s.proposal.get("final") is None and all(x.settled for x in s.slots)
        ):
            return self._think(unit, now)
        if s.proposal.get("final") is not None:
            return self._finish(unit, now)
        slot = next(x for x in s.slots if not x.settled)
        return self._act(unit, slot, now)

    def _review_request(
        self,
        unit: Unit,
        kind: str,
        decision: Decision,
        now: datetime,
        *,
        step: int | None = None,
        action: str | None = None,
        args: dict[str, Any] | None = None,
        record: dict[str, Any] | None = None,
    ) -> ReviewRequested:
        esc = unit.contract.escalation
        subject: Any = (
            args
            if kind == "action"
            else (unit.state.input if kind == "admit" else outcome_facts(unit.state))
        )
        return ReviewRequested(
            review_id=f"rv_{uuid.uuid4().hex[:16]}",
            kind=kind,
            step=step,
            action=action,
            args=args,
            digest=action_digest(unit.run_id, step, action or kind, subject),
            effect=decision.effect,
            reviewers=list(decision.reviewers or esc.reviewers),
            reasons=list(decision.reasons),
            requested_at=format_time(now),
            due_at=format_time(now + esc.sla) if esc.sla else None,
            on_timeout=esc.on_timeout,
            decision=record,
        )

    def _read_channels(
        self, unit: Unit, names: list[str], now: datetime, reason: str
    ) -> list[Event]:
        events: list[Event] = []
        for name in names:
            spec = unit.contract.channels[name]
            if not spec.reader:
                continue
            reader = import_callable(spec.reader, f"reader of channel {name}")
            content = recordable(
                reader(dict(unit.state.input)), f"channel {name}", cap="observation_bytes"
            )
            events.append(ChannelRead(name, list(spec.labels), content, format_time(now), reason))
        return events

    def _admit(self, unit: Unit, now: datetime) -> bool:
        s = unit.state
        verdict = self._last_verdict(s, "admit")
        if verdict is not None:
            req, decided = verdict
            if decided.verdict == "approve":
                unit.apply([RunAdmitted(req.decision or {}, by_review=req.review_id)], now)
            elif decided.verdict == "expired" and decided.effect == "escalate":
                unit.apply([RunEscalated("admission review timed out", list(req.reviewers))], now)
            else:
                unit.apply(
                    [
                        RunRefused(
                            req.decision or {},
                            reason=f"admission {decided.verdict} by {decided.by}",
                        )
                    ],
                    now,
                )
            return True
        if not s.channels:
            reads = self._read_channels(unit, sorted(unit.contract.channels), now, "admit")
            if reads:
                unit.apply(reads, now)
        history = unit.history()
        decision = decide_admit(unit.contract, s, now, history)
        record = decision_record(decision, history.calls)
        if decision.effect in ("allow", "batch"):
            unit.apply([RunAdmitted(record)], now)
        elif decision.effect == "deny":
            unit.apply([RunRefused(record, reason="; ".join(decision.reasons))], now)
        else:
            unit.apply([self._review_request(unit, "admit", decision, now, record=record)], now)
        return True

    def _last_verdict(self, s: RunState, kind: str) -> tuple[ReviewRequested, ReviewDecided] | None:
        for req in reversed(s.requests):
            if req.kind == kind and req.review_id in s.review_verdicts:
                return req, s.review_verdicts[req.review_id]
        return None

    def _act(self, unit: Unit, slot: Slot, now: datetime) -> bool:
        s = unit.state
        contract = unit.contract
        spec = contract.actions[slot.name]
        if slot.status in ("proposed", "approved", "edited"):
            # about to decide: data the decision depends on must be fresh (an approval
            # may come hours after the facts it saw)
            stale = [
                ch
                for ch in spec.reads
                if contract.channels[ch].reader
                and contract.channels[ch].max_age is not None
                and (
                    ch not in s.channels
                    or now - parse_time(s.channels[ch][1]) > contract.channels[ch].max_age  # type: ignore[operator]
                )
            ]
            if stale:
                unit.apply(self._read_channels(unit, stale, now, "freshness"), now)
        if slot.status == "proposed":
            hit = budgets.action_check(contract, s)
            if hit is not None:
                unit.apply(budgets.exceeded(contract, hit), now)
                return True
            history = unit.history()
            decision = decide_action(contract, s, slot.name, slot.args, now, history)
            step = s.next_step
            events: list[Event] = [
                ActionDecided(
                    step,
                    slot.index,
                    slot.name,
                    slot.args,
                    decision_record(decision, history.calls),
                )
            ]
            # The autonomy level overlays the policy decision (which stays recorded as
            # policy made it, so replay is unaffected): `shadow` never executes, `assist`
            # sends everything policy would allow to a person.
            level = contract.autonomy.level
            execute = decision.effect == "allow" and contract.autonomy.executes
            if decision.effect != "deny" and level == "shadow":
                events.append(ActionShadowed(step, slot.name, slot.args, decision.effect))
            elif execute:
                events.append(self._started(unit, step, slot.name, slot.args, 1, now))
            elif decision.effect != "deny":
                request = self._review_request(
                    unit, "action", decision, now, step=step, action=slot.name, args=slot.args
                )
                if decision.effect == "allow":
                    request = dataclasses.replace(
                        request,
                        effect="review",
                        reasons=[
                            *request.reasons,
                            "autonomy level assist: every action is reviewed",
                        ],
                    )
                events.append(request)
            unit.apply(events, now, flush=execute)
            failpoint("after_decision")
            if execute:
                return self._execute(unit, step, slot.name, slot.args, 1, now)
            return True
        assert slot.step is not None
        if slot.status in ("approved", "edited"):
            return self._act_on_approval(unit, slot, now)
        if slot.status in ("decided", "started"):
            if slot.attempts >= spec.max_attempts:
                # every attempt so far timed out or never returned (the worker died in it):
                # give up rather than take down worker after worker
                unit.apply(
                    self._gave_up(unit, slot.step, slot.name, slot.attempts, slot.timeouts),
                    now,
                )
                return True
            attempt = slot.attempts + 1
            unit.apply(
                [self._started(unit, slot.step, slot.name, slot.args, attempt, now)],
                now,
                flush=True,
            )
            return self._execute(unit, slot.step, slot.name, slot.args, attempt, now)
        raise RunStateError(f"run {s.run_id}: action {slot.name} in unexpected state {slot.status}")

    def _act_on_approval(self, unit: Unit, slot: Slot, now: datetime) -> bool:
        """Decide an approved action again, on current facts, just before it would run.

        An approval answers one decision, not the action forever: an edit is a new proposal
        that runs on the approval only if policy now allows it; an unedited action runs
        unless the decision now is stronger than the one the approval answered (a rate
        limit reached meanwhile, a channel that now shows the order refunded). A stronger
        decision wins and is recorded: a deny ends the action, a review or escalation opens
        a new review for the group it names.
        """
        assert slot.step is not None
        s = unit.state
        history = unit.history()
        decision = decide_action(unit.contract, s, slot.name, slot.args, now, history)
        record = decision_record(decision, history.calls)
        events: list[Event] = [ActionDecided(slot.step, slot.index, slot.name, slot.args, record)]
        bound = "allow" if slot.status == "edited" else (slot.approved_effect or "review")
        if decision.effect == "deny":
            unit.apply(events, now)
            return True
        if PRECEDENCE[decision.effect] > PRECEDENCE[bound]:
            why = (
                "edited arguments need their own review"
                if slot.status == "edited"
                else f"decided {decision.effect} on current facts, stronger than the "
                f"{bound} that was approved"
            )
            request = self._review_request(
                unit, "action", decision, now, step=slot.step, action=slot.name, args=slot.args
            )
            events.append(dataclasses.replace(request, reasons=[*request.reasons, why]))
            unit.apply(events, now)
            return True
        self._check_approval(unit, slot)
        events.append(self._started(unit, slot.step, slot.name, slot.args, 1, now))
        unit.apply(events, now, flush=True)
        return self._execute(unit, slot.step, slot.name, slot.args, 1, now)

    def _gave_up(
        self,
        unit: Unit,
        step: int,
        name: str,
        attempts: int,
        timeouts: int,
        *,
        compensation: bool = False,
    ) -> list[Event]:
        """The action is failed after ``attempts`` calls that never returned a result."""
        lost = attempts - timeouts
        how = ", ".join(
            part
            for part in (
                f"{timeouts} timed out" if timeouts else "",
                f"{lost} never returned (the worker stopped or crashed during the call)"
                if lost
                else "",
            )
            if part
        )
        error = f"gave up after {attempts} attempt(s) of {name}: {how}"
        events: list[Event] = [
            ActionFailed(step, name, error, format_time(self.clock()), 0.0, compensation)
        ]
        if not compensation:
            events.extend(self._abort(unit, f"action {name} failed: {error}"))
        return events

    def _check_approval(self, unit: Unit, slot: Slot) -> None:
        expected = action_digest(unit.run_id, slot.step, slot.name, slot.args)
        if slot.approved_digest != expected:
            raise RunStateError(
                f"run {unit.run_id}: approval of step {slot.step} does not match the action about to run"
            )

    def _started(
        self,
        unit: Unit,
        step: int,
        name: str,
        args: dict[str, Any],
        attempt: int,
        now: datetime,
        *,
        compensation: bool = False,
    ) -> ActionStarted:
        key = idempotency_key(unit.run_id, step, compensation)
        return ActionStarted(step, name, dict(args), key, attempt, format_time(now), compensation)

    def _execute(
        self,
        unit: Unit,
        step: int,
        name: str,
        args: dict[str, Any],
        attempt: int,
        now: datetime,
        *,
        compensation: bool = False,
    ) -> bool:
        spec = unit.contract.actions[name]
        key = idempotency_key(unit.run_id, step, compensation)
        ctx = ExecutionContext(unit.run_id, step, name, key, attempt, compensation)
        started = time.perf_counter()
        executor = resolve_executor(spec.executor)
        timeout = spec.timeout.total_seconds()
        try:
            raw = self.runner.call(lambda: executor(dict(args), ctx), timeout)
        except ExecutorTimeoutError:
            # unknown whether the effect happened: the next attempt reuses the key
            at = self.clock()
            unit.apply(
                [ActionTimedOut(step, name, attempt, timeout, format_time(at), compensation)],
                at,
                flush=True,
            )
            return True
        except ExecutorRaisedError as raised:
            failed_at = self.clock()
            error = error_text(raised.error)
            events: list[Event] = [
                ActionFailed(
                    step,
                    name,
                    error,
                    format_time(failed_at),
                    (time.perf_counter() - started) * 1000,
                    compensation,
                )
            ]
            if not compensation:
                events.extend(self._abort(unit, f"action {name} failed: {error}"))
            unit.apply(events, failed_at)
            return True
        failpoint("after_executor")
        done = self.clock()
        # The executor returned, so its effect happened: the completion is recorded whatever
        # the result looks like. A result that is not JSON text is recorded as the closest
        # value that is, and the run does not go on as if it were well formed.
        result, changes = jsontext.sanitised(raw)
        if len(json.dumps(result)) > CAPS["observation_bytes"].limit:
            size = jsontext.json_size(result)
            if size > CAPS["observation_bytes"].limit:  # kept out of the model's context
                changes.append(CAPS["observation_bytes"].exceeded(size, "result"))
                result = {"omitted": changes[-1]}
        events = [
            ActionCompleted(
                step,
                name,
                dict(args),
                result,
                format_time(done),
                round((time.perf_counter() - started) * 1000, 3),
                compensation,
                match_args=match_form(spec.normalize, args) if spec.normalize else None,
                result_changes=changes or None,
            )
        ]
        unit.apply(events, done)
        if changes and not compensation:
            reason = (
                f"action {name} failed: result of {name} cannot be used as returned "
                f"({'; '.join(changes)}); it is recorded as sanitised"
            )
            unit.apply(self._abort(unit, reason), done)
        return True

    def _abort(self, unit: Unit, reason: str) -> list[Event]:
        """Compensate earlier writes (newest first) if any declare how; otherwise fail the run."""
        steps = [
            a["step"]
            for a in reversed(unit.state.executed)
            if unit.contract.actions[a["name"]].compensate
        ]
        if steps:
            return [CompensationStarted(reason, steps)]
        return [RunFailed(reason)]

    def _compensate(self, unit: Unit, now: datetime) -> bool:
        s = unit.state
        for step in s.compensation_steps:
            if step in s.compensated:
                continue
            original = next(a for a in s.executed if a["step"] == step)
            comp = unit.contract.actions[original["name"]].compensate
            assert comp is not None
            args = self._compensation_args(unit.contract, comp, original)
            tried = s.compensation_attempts.get(step, 0)
            if tried >= unit.contract.actions[comp].max_attempts:
                events = self._gave_up(
                    unit,
                    step,
                    comp,
                    tried,
                    s.compensation_timeouts.get(step, 0),
                    compensation=True,
                )
                unit.apply(events, now)
                return True
            attempt = tried + 1
            unit.apply(
                [self._started(unit, step, comp, args, attempt, now, compensation=True)],
                now,
                flush=True,
            )
            return self._execute(unit, step, comp, args, attempt, now, compensation=True)
        reason = s.compensation_reason or s.failed_action or "outcome not accepted"
        unit.apply([RunFailed(f"{reason}; compensated steps {s.compensation_steps}")], now)
        return True

    @staticmethod
    def _compensation_args(
        contract: Contract, comp: str, original: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The compensating action gets the fields of the original's result (then args) it declares."""
        props = (contract.actions[comp].args_schema.get("properties") or {}).keys()
        raw = original.get("result")
        result: dict[str, Any] = raw if isinstance(raw, dict) else {}
        merged = {**original["args"], **result}
        return {k: merged[k] for k in props if k in merged}

    def _finish(self, unit: Unit, now: datetime) -> bool:
        s = unit.state
        verdict = self._last_verdict(s, "outcome")
        if verdict is not None:
            req, decided = verdict
            if decided.verdict == "approve":
                return self._complete(unit, req.decision or {}, now)
            if decided.verdict == "expired" and decided.effect == "escalate":
                unit.apply([RunEscalated("outcome review timed out", list(req.reviewers))], now)
                return True
            unit.apply(self._abort(unit, f"outcome {decided.verdict} by {decided.by}"), now)
            return True
        history = unit.history()
        decision = decide_outcome(unit.contract, s, now, history)
        record = decision_record(decision, history.calls)
        if decision.effect in ("allow", "batch"):
            return self._complete(unit, record, now)
        if decision.effect == "deny":
            events = self._abort(unit, "outcome denied: " + "; ".join(decision.reasons))
            if isinstance(events[0], RunFailed):
                events = [RunFailed(events[0].error, decision=record)]
            elif isinstance(events[0], CompensationStarted):
                events = [CompensationStarted(events[0].reason, events[0].steps, decision=record)]
            unit.apply(events, now)
            return True
        unit.apply([self._review_request(unit, "outcome", decision, now, record=record)], now)
        return True

    def _complete(self, unit: Unit, record: dict[str, Any], now: datetime) -> bool:
        s = unit.state
        success, value, _errors = evaluate_success(unit.contract, s)
        unit.apply(
            [
                RunCompleted(
                    outcome_facts(s), record, success, value, round(s.cost_usd, 6), format_time(now)
                )
            ],
            now,
        )
        return True

    def _expire(self, unit: Unit, now: datetime) -> None:
        req = unit.state.review
        assert req is not None
        decided = ReviewDecided(
            req.review_id,
            "expired",
            "system:timeout",
            format_time(now),
            req.digest,
            f"no decision within the SLA; {req.on_timeout}",
            None,
            req.on_timeout,
        )
        events: list[Event] = [decided]
        if req.kind == "action" and req.on_timeout == "escalate":
            events.append(RunEscalated(f"review {req.review_id} timed out", list(req.reviewers)))
        unit.apply(events, now)
