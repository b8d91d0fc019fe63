"""The run loop: the only code that moves a run forward, and only by appending events.

A worker leases a run, folds its events into a :class:`RunState`, and repeats one step at a
time — admit, think (call the model), act (decide and execute one action), finish — until
the run ends or must wait for a person. Every step's events are appended in one
transaction against the sequence number the worker last saw and its lease epoch, so two
workers can never both advance a run, and a worker that crashed anywhere leaves a ledger
from which the next one continues: an action whose start is recorded but whose
completion is not is retried with the same idempotency key; a recorded model output is
never requested again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from charter import jsontext
from charter.contract.model import Contract, PolicyPack
from charter.contract.source import Document
from charter.errors import (
    CharterError,
    ConfigurationError,
    ContractError,
    IdempotencyConflictError,
    ModelError,
    StoreError,
    UsageError,
)
from charter.execution.base import ExecutionContext
from charter.execution.executors import resolve_callable, resolve_executor
from charter.execution.runner import CallRunner, ExecutorRaisedError, ExecutorTimeoutError
from charter.ledger.chain import digest
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionShadowed,
    ActionStarted,
    ActionTimedOut,
    BudgetExceeded,
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
from charter.ledger.store import ConflictError, RunRow, Store, StoreUnavailableError, open_store
from charter.models.base import ModelProvider, ModelRequest
from charter.models.pricing import METERED, PriceTable, contract_prices, price_table
from charter.models.prompt import PromptTemplate, builtin_template, load_template, render
from charter.models.proposal import parse_proposal
from charter.models.registry import check_model, create_provider, parse_model, spec_for
from charter.policy.decision import PRECEDENCE, Decision
from charter.policy.history import args_match
from charter.policy.normalize import match_form
from charter.runs.decisions import (
    LedgerHistory,
    RecordingHistory,
    decide_action,
    decide_admit,
    decide_outcome,
    evaluate_success,
)
from charter.runs.limits import Limits
from charter.runs.spend import spend_checks
from charter.runs.state import (
    Folder,
    RunState,
    Slot,
    action_digest,
    format_time,
    history_for_model,
    outcome_facts,
    parse_time,
)
from charter.scrub import scrub

DEFAULT_MAX_MODEL_CALLS = 20
DEFAULT_PROPOSAL_RETRIES = 2
_FAILPOINT = os.environ.get("CHARTER_FAILPOINT", "")
_log = logging.getLogger("charter.worker")


def failpoint(name: str) -> None:
    """Crash the process here when ``CHARTER_FAILPOINT`` names this point (crash tests).

    The recovery guarantees are only worth what their tests prove; failpoints let the test
    suite SIGKILL a real worker at each point of the loop.
    """
    if name == _FAILPOINT:
        os.kill(os.getpid(), signal.SIGKILL)


def idempotency_key(run_id: str, step: int, compensation: bool = False) -> str:
    """Stable for one action of one run, across retries and workers; a compensation of the
    step has a key of its own so undoing is applied once too."""
    return f"{run_id}:{step}" + (":compensate" if compensation else "")


def _decision_record(decision: Decision, counts: list[list[Any]]) -> dict[str, Any]:
    return {**decision.to_dict(), "counts": counts}


def _recordable(value: Any, what: str, error: type[CharterError] = CharterError) -> Any:
    """A plain JSON copy of ``value``, or ``error`` naming every field the ledger cannot hold."""
    found = jsontext.problems(value, what)
    if found:
        raise error(f"{what} cannot be recorded: " + "; ".join(found))
    return json.loads(json.dumps(value))


def _error_text(exc: BaseException) -> str:
    """An exception as it may be recorded: credentials scrubbed, invalid text replaced.

    Exception messages carry text from outside (a provider's error body, a server's
    answer): the ledger is append-only, so nothing secret or unencodable may reach it.
    """
    return scrub(jsontext.sanitised_text(f"{type(exc).__name__}: {exc}"))


@dataclass
class _Lease:
    run_id: str
    epoch: int
    contract: Contract
    folder: Folder
    renewed: float
    lost: bool = False  # the heartbeat found the lease taken over
    # Events applied to the state but not yet committed, and the last committed position.
    # A step's events ride in the transaction that must be durable before something
    # happens outside the ledger (an executor call) or the run stops or waits.
    pending: list[Event] = dataclasses.field(default_factory=list)
    committed: int = 0

    @property
    def state(self) -> RunState:
        return self.folder.state


class _PendingHistory:
    """The ledger's count plus this run's executed actions not committed yet."""

    def __init__(self, inner: LedgerHistory, lease: _Lease) -> None:
        self.inner = inner
        self.lease = lease

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        n = self.inner.count(action, match, since, until)
        for ev in self.lease.pending:
            if (
                isinstance(ev, ActionCompleted)
                and not ev.compensation
                and ev.action == action
                and args_match(ev.match_form, match)
                and since <= parse_time(ev.completed_at) <= until
            ):
                n += 1
        return n


class Runtime:
    """Submit runs, process them, and take reviewers' decisions.

    ``store`` is a :class:`Store` or a database URL/path (default: ``$CHARTER_DATABASE_URL``
    or ``./charter.db``). ``clock`` is injectable so tests can move time (review SLAs).
    ``model`` overrides the contract's provider, e.g. ``scripted:pkg.mod:func``.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        worker_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        providers: Mapping[str, ModelProvider] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.providers: dict[str, ModelProvider] = dict(providers or {})
        self._contracts: dict[str, Contract] = {}
        # by policy hash: the prompt template and price overrides stored in the bundle
        self._templates: dict[str, PromptTemplate] = {}
        self._bundles: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, dict[str, Any] | None] = {}
        self._built: dict[tuple[str, str | None], ModelProvider] = {}
        self._stop = threading.Event()
        self.limits = limits or Limits()
        self._current: _Lease | None = None  # the lease the heartbeat keeps alive
        self._heartbeat: threading.Thread | None = None
        self._resolved: set[str] = set()  # policy hashes whose code this process can import
        self._runner = CallRunner(f"charter-executor:{self.worker_id}")

    # -- submission ------------------------------------------------------------------
    def submit(
        self,
        contract: Contract,
        input: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> str:
        """Validate the input and queue a run; with a known ``idempotency_key`` return that run.

        ``model`` (``provider:model``, e.g. ``openai:gpt-4o-mini``) overrides the contract's
        model for this run; it is recorded in ``RunSubmitted`` so every worker uses it.
        """
        payload = _recordable(dict(input), "input", UsageError)
        extra = _recordable(dict(context or {}), "context", UsageError)
        if idempotency_key is not None:
            problem = jsontext.text_problem(idempotency_key, "idempotency key")
            if problem or not idempotency_key.strip():
                raise UsageError(problem or "idempotency key: must not be blank")
        errors = sorted(
            contract.input_validator.iter_errors(payload),
            key=lambda e: list(map(str, e.path)),
        )
        if errors:
            detail = "; ".join(
                f"input{''.join(f'.{p}' if isinstance(p, str) else f'[{p}]' for p in e.path)}: {e.message}"
                for e in errors
            )
            raise UsageError(f"input does not match the input schema of {contract.ref}: {detail}")
        self._check_callables(contract)
        model_spec = self._check_model(model) if model else None
        template, prices = self._prompt_and_prices(contract)
        bundle = {
            "contract": {"file": contract.path, "data": contract.data},
            "packs": [{"file": p.path, "data": p.data} for p in contract.packs],
            # so that a worker on another machine renders and prices exactly the same
            "prompt": template.to_bundle(),
            "prices": prices,
        }
        self._check_bundle(contract, template, prices)
        if self._bundles.get(contract.policy_hash) != bundle:
            self.store.save_bundle(contract.policy_hash, contract.ref, bundle)
            self._bundles[contract.policy_hash] = bundle
        self._contracts[contract.policy_hash] = contract
        self._templates.setdefault(contract.policy_hash, template)
        self._prices.setdefault(contract.policy_hash, prices)
        now = format_time(self.clock())
        event = RunSubmitted(
            contract=contract.ref,
            contract_hash=contract.content_hash,
            policy_hash=contract.policy_hash,
            input=payload,
            context=extra,
            idempotency_key=idempotency_key,
            submitted_at=now,
            model=model_spec,
        )
        run_id, created = self.store.create_run(
            f"run_{uuid.uuid4().hex[:20]}",
            contract=contract.ref,
            contract_name=contract.name,
            policy_hash=contract.policy_hash,
            idempotency_key=idempotency_key,
            event=event,
            at=now,
        )
        if not created:
            self._same_submission(run_id, event)
        return run_id

    def _same_submission(self, run_id: str, event: RunSubmitted) -> None:
        """A known idempotency key returns its run only for the same submission.

        A retry of the same request is answered with the run it created; a *different*
        request under the same key is a caller's bug (two tasks would silently collapse into
        one), refused with both hashes so the caller can tell which is which.
        """
        first = self.store.events(run_id)[0].event
        assert isinstance(first, RunSubmitted)
        names = ("contract", "input", "context", "model")
        ours = (event.contract_hash, digest(event.input), digest(event.context), event.model)
        theirs = (first.contract_hash, digest(first.input), digest(first.context), first.model)
        if ours == theirs:
            return
        differ = [n for n, a, b in zip(names, ours, theirs, strict=True) if a != b]
        raise IdempotencyConflictError(
            f"idempotency key {event.idempotency_key!r} already names run {run_id}, submitted "
            f"to {first.contract} with input sha256:{theirs[1][:16]}; this submission "
            f"to {event.contract} has input sha256:{ours[1][:16]} (different: "
            f"{', '.join(differ)}); use a new key for a new task"
        )

    @staticmethod
    def _check_callables(contract: Contract) -> None:
        """Fail at submission, not halfway through a run, when code named by the contract is missing."""
        for ch in contract.channels.values():
            if ch.reader:
                resolve_callable(ch.reader, f"reader of channel {ch.name}")
        for spec in contract.actions.values():
            if isinstance(spec.executor, str):
                resolve_callable(spec.executor, f"executor of action {spec.name}")
        script = contract.model.get("script")
        if contract.model.get("provider", "scripted") == "scripted" and script:
            resolve_callable(str(script), "model script")

    def _check_model(self, model: str) -> str:
        """A ``--model`` override, checked now unless it names a provider given to this
        Runtime (``providers=...``), which the registry need not know."""
        spec = parse_model(model)
        return str(spec if spec.provider in self.providers else check_model(model))

    def _prompt_and_prices(
        self, contract: Contract
    ) -> tuple[PromptTemplate, dict[str, Any] | None]:
        """The template and price file the contract names, read next to it; for a contract
        that came out of the ledger (``contract_for``) on a machine without those files,
        the copies stored in its bundle."""
        try:
            return load_template(contract), contract_prices(contract.path, contract.model)
        except (ContractError, UsageError):
            try:
                stored = self.store.load_bundle(contract.policy_hash)
            except StoreError:
                stored = None
            if stored is None or (contract.model.get("prompt") and not stored.get("prompt")):
                raise
            tpl = stored.get("prompt")
            template = PromptTemplate.from_bundle(tpl) if tpl else builtin_template()
            return template, stored.get("prices")

    def _check_bundle(
        self, contract: Contract, template: PromptTemplate, prices: dict[str, Any] | None
    ) -> None:
        """A contract version is immutable, and so are the prompt template and price file it
        names: refuse a submission whose files changed since the version was first stored."""
        if not contract.model.get("prompt") and prices is None:
            return
        h = contract.policy_hash
        if self._templates.get(h) == template and self._prices.get(h, prices) == prices:
            return
        try:
            stored = self.store.load_bundle(h)
        except StoreError:
            return  # the first submission of this version
        old = stored.get("prompt")
        if contract.model.get("prompt") and old is not None and old.get("text") != template.text:
            raise UsageError(
                f"prompt template {template.source} changed since {contract.ref} was first "
                "submitted; a contract version is immutable: bump `version` to use the new template"
            )
        if stored.get("prices") != prices:
            raise UsageError(
                f"price file {contract.model.get('prices')} changed since {contract.ref} was "
                "first submitted; bump the contract's `version` (or override with $CHARTER_PRICES)"
            )

    def contract_for(self, policy_hash: str) -> Contract:
        """The exact contract (and packs) a run was submitted with, from the ledger."""
        found = self._contracts.get(policy_hash)
        if found is None:
            bundle = self.store.load_bundle(policy_hash)
            packs = [
                PolicyPack.from_document(Document(p["file"], p["data"], p["data"]))
                for p in bundle["packs"]
            ]
            c = bundle["contract"]
            found = Contract.from_document(Document(c["file"], c["data"], c["data"]), packs)
            if bundle.get("prompt"):
                self._templates[policy_hash] = PromptTemplate.from_bundle(bundle["prompt"])
            self._prices[policy_hash] = bundle.get("prices")
            self._contracts[policy_hash] = found
        return found

    def template_for(self, contract: Contract) -> PromptTemplate:
        """The prompt template stored in the contract's bundle (built-in for old ledgers)."""
        return self._templates.get(contract.policy_hash) or builtin_template()

    def prices_for(self, contract: Contract) -> PriceTable:
        """Prices for calls of ``contract``: shipped, its bundle's file, then $CHARTER_PRICES."""
        return price_table(self._prices.get(contract.policy_hash))

    def provider_for(self, contract: Contract, override: str | None = None) -> ModelProvider:
        """The provider a run calls: one passed to ``Runtime(providers=...)`` by name, else one
        built from the registry (``charter.models.registry``) for the contract and the
        submission's override, kept for reuse (its HTTP client, the output mode it learned)."""
        spec = spec_for(contract, override)
        if spec.provider in self.providers:
            return self.providers[spec.provider]
        key = (contract.policy_hash, override)
        found = self._built.get(key)
        if found is None:
            found = create_provider(contract, override=override, store=self.store)
            self._built[key] = found
        return found

    # -- reading ---------------------------------------------------------------------
    def state(self, run_id: str) -> RunState:
        row = self.store.find_run(run_id)
        return Folder(self.contract_for(row.policy_hash), row.run_id).apply_all(
            self.store.events(row.run_id)
        )

    # -- processing ------------------------------------------------------------------
    def run(self, run_id: str) -> RunState:
        """Process one run in this process until it ends or waits (``run start --wait``)."""
        row = self.store.find_run(run_id)
        for _ in range(200):
            now = self.clock()
            leased = self.store.claim_run(
                row.run_id, self.worker_id, format_time(now), format_time(now + self.lease)
            )
            if leased is not None:
                return self._process(leased)
            time.sleep(0.05)
        raise CharterError(
            f"run {row.run_id} is held by another worker; try again or let it finish"
        )

    def work_once(self) -> str | None:
        """Claim and process one runnable run; return its id, or ``None`` if none was ready."""
        now = self.clock()
        leased = self.store.claim(
            self.worker_id,
            format_time(now),
            format_time(now + self.lease),
            max_per_contract=self.limits.max_per_contract or None,
        )
        if leased is None:
            return None
        self._process(leased)
        return leased.run_id

    def work(
        self, *, idle_exit: float | None = None, poll: float = 0.25, max_runs: int | None = None
    ) -> int:
        """Process runs until stopped (``stop()``/SIGTERM), idle for ``idle_exit`` s, or ``max_runs``.

        When idle, waits on the store (``Store.wait_for_work``): PostgreSQL wakes the worker
        as soon as a run is queued, SQLite polls every ``poll`` s. A database that drops the
        connection or is briefly unreachable does not end the worker: it backs off and
        carries on (whatever it was doing is either committed or picked up again).
        """
        done = 0
        idle_since = time.monotonic()
        backoff = poll
        while not self._stop.is_set():
            if max_runs is not None and done >= max_runs:
                break
            try:
                run_id = self.work_once()
            except StoreUnavailableError as exc:
                _log.warning("worker %s: %s; retrying in %.2fs", self.worker_id, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = poll
            if run_id is not None:
                done += 1
                idle_since = time.monotonic()
                continue
            if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                break
            self.store.wait_for_work(poll, self._stop)
        return done

    def stop(self) -> None:
        """Finish the current step, release the run, and stop working (graceful shutdown)."""
        self._stop.set()

    def _process(self, row: RunRow) -> RunState:
        contract = self.contract_for(row.policy_hash)
        if row.policy_hash not in self._resolved:
            try:
                self._check_callables(contract)
            except CharterError as exc:
                # a worker problem, not the run's: leave the run as it is for a worker
                # that can import the code, and stop this one (see ConfigurationError)
                self.store.release(row.run_id, self.worker_id, row.epoch)
                raise ConfigurationError(
                    f"worker {self.worker_id} cannot run {contract.ref}: {exc}; run "
                    f"{row.run_id} was left untouched for a worker that can"
                ) from None
            self._resolved.add(row.policy_hash)
        lease = _Lease(
            row.run_id, row.epoch, contract, Folder(contract, row.run_id), time.monotonic()
        )
        lease.folder.apply_all(self.store.events(row.run_id))
        lease.committed = lease.state.seq
        self._current = lease
        self._start_heartbeat()
        try:
            while not lease.state.is_terminal and not self._stop.is_set():
                try:
                    self._renew(lease)
                    if not self._step(lease):
                        self._flush(lease)
                        break
                except ConflictError:
                    # someone else appended (a cancel, a review): re-read and carry on
                    lease.pending = []
                    lease.folder = Folder(contract, row.run_id)
                    lease.folder.apply_all(self.store.events(row.run_id))
                    lease.committed = lease.state.seq
                    if self.store.get_run(row.run_id).epoch != lease.epoch:
                        break
                except (StoreError, ConfigurationError):
                    raise
                except (Exception, SystemExit) as exc:
                    # a reader, model or bug that raises (or calls sys.exit) must not kill the
                    # worker and leave the run queued to kill the next one: the run fails,
                    # recorded
                    self._fail(lease, exc)
            self._flush(lease)  # stopped between steps: commit what the last step did
        except ConflictError:
            lease.pending = []
        finally:
            self._current = None
            self.store.release(row.run_id, self.worker_id, lease.epoch)
        return lease.state

    def _fail(self, lease: _Lease, exc: BaseException) -> None:
        reason = f"run stopped by an error: {_error_text(exc)}"
        events: list[Event] = (
            [RunFailed(reason)] if lease.state.compensating else self._abort(lease, reason)
        )
        self._append(lease, events, self.clock())

    def _renew(self, lease: _Lease) -> None:
        if lease.lost:
            raise ConflictError(f"lease on {lease.run_id} lost")
        if time.monotonic() - lease.renewed < self.lease.total_seconds() / 3:
            return
        now = self.clock()
        if not self.store.renew(
            lease.run_id, self.worker_id, lease.epoch, format_time(now + self.lease)
        ):
            raise ConflictError(f"lease on {lease.run_id} lost")
        lease.renewed = time.monotonic()

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(
                target=_heartbeat,
                args=(weakref.ref(self),),
                name=f"charter-heartbeat:{self.worker_id}",
                daemon=True,
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        """Renew the current lease if a third of it has passed since the last renewal.

        The loop renews between steps; this covers one long step (a slow model or executor
        call), so a live worker never loses its lease mid-call. A dead or stalled process
        stops beating and its lease expires: another worker reclaims the run, and the
        epoch check in every append fences the old one off if it ever wakes up.
        """
        lease = self._current
        if lease is None or lease.lost:
            return
        if time.monotonic() - lease.renewed < self.lease.total_seconds() / 3:
            return
        now = self.clock()
        try:
            ok = self.store.renew(
                lease.run_id, self.worker_id, lease.epoch, format_time(now + self.lease)
            )
        except Exception as exc:  # a heartbeat must never take the worker down
            _log.warning("worker %s: heartbeat of %s failed: %s", self.worker_id, lease.run_id, exc)
            return
        if ok:
            lease.renewed = time.monotonic()
        elif self._current is lease:
            lease.lost = True

    def _rate_slot(self, provider: str) -> bool:
        """Wait for a slot of ``provider``'s rate limit; ``False`` if stopped meanwhile."""
        limit = self.limits.rates.get(provider)
        if limit is None:
            return True
        while not self._stop.is_set():
            now = self.clock()
            oldest = self.store.acquire_rate_slot(
                f"provider:{provider}",
                limit.calls,
                format_time(now),
                format_time(now - limit.window),
            )
            if oldest is None:
                return True
            wait = (parse_time(oldest) + limit.window - now).total_seconds()
            self._stop.wait(min(max(wait, 0.005), 1.0))
        return False

    def _append(
        self, lease: _Lease, events: list[Event], now: datetime, *, flush: bool = False
    ) -> None:
        """Apply events to the run's state now; commit them with the step's other events.

        Events that end the run or make it wait are committed at once; ``flush`` commits
        before something outside the ledger happens (an executor call). Anything still
        pending when a worker dies is simply redone by the next one: a channel re-read,
        a decision re-taken, a model re-asked, an executor retried with the same key.
        """
        at = format_time(now)
        for ev in events:
            lease.folder.apply(StoredEvent(lease.run_id, lease.state.seq + 1, at, ev, "", ""))
        lease.pending.extend(events)
        if flush or self._status_after(lease, events):
            self._flush(lease, now)

    def _flush(self, lease: _Lease, now: datetime | None = None) -> None:
        if not lease.pending:
            return
        events, lease.pending = lease.pending, []
        at = format_time(now or self.clock())
        try:
            self.store.append(
                lease.run_id,
                events,
                expected_seq=lease.committed,
                at=at,
                epoch=lease.epoch,
                **self._status_after(lease, events),
            )
        except ConflictError:
            self._keep_executor_facts(lease, events, at)
            raise
        lease.committed += len(events)

    def _keep_executor_facts(self, lease: _Lease, events: list[Event], at: str) -> None:
        """If the run ended meanwhile (a cancel), what executors did still happened: record
        those results (not the rest) so the ledger and ``count()`` know it."""
        current = self.store.events(lease.run_id)
        if not Folder(lease.contract, lease.run_id).apply_all(current).is_terminal:
            return
        recorded = {
            (e.event.step, e.event.compensation)
            for e in current
            if isinstance(e.event, ActionCompleted | ActionFailed)
        }
        facts = [
            e
            for e in events
            if isinstance(e, ActionCompleted | ActionFailed)
            and (e.step, e.compensation) not in recorded
        ]
        if facts:
            self.store.append(lease.run_id, facts, expected_seq=current[-1].seq, at=at)

    @staticmethod
    def _status_after(lease: _Lease, events: list[Event]) -> dict[str, Any]:
        for ev in reversed(events):
            if isinstance(ev, RunRefused):
                return {"status": "refused", "wake_at": None}
            if isinstance(ev, RunCompleted):
                return {"status": "completed", "wake_at": None}
            if isinstance(ev, RunFailed):
                return {"status": "failed", "wake_at": None}
            if isinstance(ev, RunEscalated):
                return {"status": "escalated", "wake_at": None}
            if isinstance(ev, RunCancelled):
                return {"status": "cancelled", "wake_at": None}
            if isinstance(ev, ReviewRequested):
                return {"status": "waiting", "wake_at": ev.due_at}
            if isinstance(ev, ReviewDecided):
                return {"status": "queued", "wake_at": None}
        return {}

    # -- one step --------------------------------------------------------------------
    def _step(self, lease: _Lease) -> bool:
        s = lease.state
        now = self.clock()
        if s.review is not None:
            if s.review.due_at and parse_time(s.review.due_at) <= now:
                self._expire(lease, now)
                return True
            return False
        if not s.admitted:
            return self._admit(lease, now)
        if s.compensating:
            return self._compensate(lease, now)
        if s.proposal is None or (
            s.proposal.get("final") is None and all(x.settled for x in s.slots)
        ):
            return self._think(lease, now)
        if s.proposal.get("final") is not None:
            return self._finish(lease, now)
        slot = next(x for x in s.slots if not x.settled)
        return self._act(lease, slot, now)

    def _history(self, lease: _Lease) -> RecordingHistory:
        return RecordingHistory(_PendingHistory(LedgerHistory(self.store), lease))

    def _review_request(
        self,
        lease: _Lease,
        kind: str,
        decision: Decision,
        now: datetime,
        *,
        step: int | None = None,
        action: str | None = None,
        args: dict[str, Any] | None = None,
        record: dict[str, Any] | None = None,
    ) -> ReviewRequested:
        esc = lease.contract.escalation
        subject: Any = (
            args
            if kind == "action"
            else (lease.state.input if kind == "admit" else outcome_facts(lease.state))
        )
        return ReviewRequested(
            review_id=f"rv_{uuid.uuid4().hex[:16]}",
            kind=kind,
            step=step,
            action=action,
            args=args,
            digest=action_digest(lease.run_id, step, action or kind, subject),
            effect=decision.effect,
            reviewers=list(decision.reviewers or esc.reviewers),
            reasons=list(decision.reasons),
            requested_at=format_time(now),
            due_at=format_time(now + esc.sla) if esc.sla else None,
            on_timeout=esc.on_timeout,
            decision=record,
        )

    def _read_channels(
        self, lease: _Lease, names: list[str], now: datetime, reason: str
    ) -> list[Event]:
        events: list[Event] = []
        for name in names:
            spec = lease.contract.channels[name]
            if not spec.reader:
                continue
            reader = resolve_callable(spec.reader, f"reader of channel {name}")
            content = _recordable(reader(dict(lease.state.input)), f"channel {name}")
            events.append(ChannelRead(name, list(spec.labels), content, format_time(now), reason))
        return events

    def _admit(self, lease: _Lease, now: datetime) -> bool:
        s = lease.state
        verdict = self._last_verdict(s, "admit")
        if verdict is not None:
            req, decided = verdict
            if decided.verdict == "approve":
                self._append(lease, [RunAdmitted(req.decision or {}, by_review=req.review_id)], now)
            elif decided.verdict == "expired" and decided.effect == "escalate":
                self._append(
                    lease, [RunEscalated("admission review timed out", list(req.reviewers))], now
                )
            else:
                self._append(
                    lease,
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
            reads = self._read_channels(lease, sorted(lease.contract.channels), now, "admit")
            if reads:
                self._append(lease, reads, now)
        history = self._history(lease)
        decision = decide_admit(lease.contract, s, now, history)
        record = _decision_record(decision, history.calls)
        if decision.effect in ("allow", "batch"):
            self._append(lease, [RunAdmitted(record)], now)
        elif decision.effect == "deny":
            self._append(lease, [RunRefused(record, reason="; ".join(decision.reasons))], now)
        else:
            self._append(
                lease, [self._review_request(lease, "admit", decision, now, record=record)], now
            )
        return True

    def _last_verdict(self, s: RunState, kind: str) -> tuple[ReviewRequested, ReviewDecided] | None:
        for req in reversed(s.requests):
            if req.kind == kind and req.review_id in s.review_verdicts:
                return req, s.review_verdicts[req.review_id]
        return None

    def _think(self, lease: _Lease, now: datetime) -> bool:
        s = lease.state
        budget = lease.contract.budget
        provider = self.provider_for(lease.contract, s.model_override)
        history = history_for_model(s)
        # redacted by label, rendered from the template stored with the contract
        rendered = render(
            lease.contract,
            observations=s.observations,
            history=history,
            feedback=s.feedback,
            template=self.template_for(lease.contract),
        )
        prompt = rendered.text
        params = {
            k: lease.contract.model[k]
            for k in ("temperature", "seed", "max_tokens")
            if k in lease.contract.model
        }
        request = ModelRequest(
            contract=lease.contract.ref,
            run_id=s.run_id,
            step=s.step + 1,
            attempt=s.attempt,
            prompt=prompt,
            input=s.input,
            context=s.context(),
            observations=rendered.observations,
            actions={n: a.args_schema for n, a in lease.contract.actions.items()},
            history=history,
            feedback=s.feedback,
            params=params,
            descriptions={
                n: str((lease.contract.data["actions"].get(n) or {}).get("description") or "")
                for n in lease.contract.actions
            },
        )
        estimate = provider.estimate(request)
        prices = self.prices_for(lease.contract)
        price = prices.lookup(provider.name, provider.model)
        # reserve: the estimated prompt uncached, the whole output cap at the dearest rate
        reserve = price.reserve(estimate) if price is not None else estimate.cost_usd
        limits_cost = "max_cost_usd" in budget or any(k.startswith("max_spend_") for k in budget)
        if price is None and limits_cost and provider.name in METERED:
            raise ModelError(
                f"{provider.name}:{provider.model} has no price in price table {prices.version}, "
                f"so the cost limits of {lease.contract.ref} cannot be enforced; add it to a "
                "price file (model.prices or $CHARTER_PRICES; see docs/models.md)"
            )
        max_calls = int(budget.get("max_model_calls", DEFAULT_MAX_MODEL_CALLS))
        checks: list[tuple[str, Any, Any, Any]] = [("max_model_calls", max_calls, s.model_calls, 1)]
        if "max_tokens" in budget:
            checks.append(("max_tokens", budget["max_tokens"], s.tokens, estimate.tokens))
        if "max_cost_usd" in budget:
            checks.append(("max_cost_usd", budget["max_cost_usd"], s.cost_usd, reserve))
        if any(k.startswith("max_spend_") for k in budget):
            self._flush(lease, now)  # the window query reads committed spend, ours included
        checks.extend(spend_checks(self.store, lease.contract.name, budget, now, reserve))
        for limit, allowed, used, requested in checks:
            if used + requested > allowed:
                self._exceeded(lease, now, limit, allowed, used, requested)
                return True
        if not self._rate_slot(provider.name):
            return False  # stopping while the provider's window was full: hand the run on
        if self.store.get_run(lease.run_id).last_seq != lease.committed:
            # someone appended meanwhile (a cancel): don't pay for a call that can't be kept;
            # committing now records what executors did and raises the conflict
            self._flush(lease, now)
            raise ConflictError(f"run {lease.run_id} moved on while this worker held it")
        response = provider.complete(request)
        failpoint("after_model_call")
        usage = response.usage
        # the call is paid for: whatever came back is recorded, made recordable first (a
        # lone surrogate or NUL from a hostile server must not cost us the call's record)
        raw_output = jsontext.sanitised_text(response.raw)
        served_model = jsontext.sanitised_text(response.model)
        # settle: the actual usage at the served model's price (a dated snapshot of the
        # configured model), else the configured model's, else what the provider reported
        price = prices.lookup(provider.name, served_model) or price
        sent = dict(response.params) if response.params is not None else params
        called = ModelCalled(
            step=s.step + 1,
            attempt=s.attempt,
            provider=provider.name,
            model=served_model,
            params=sent,
            seed=sent.get("seed"),
            prompt_hash=rendered.hash,
            prompt=prompt,
            raw_output=raw_output,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=price.cost(usage) if price is not None else usage.cost_usd,
            latency_ms=round(response.latency_ms, 3),
            template_hash=rendered.template.hash,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            price_version=prices.version if price is not None else None,
            redacted=rendered.redacted or None,
        )
        proposal, reasons = parse_proposal(lease.contract, raw_output)
        events: list[Event] = [called]
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
            retries = int(budget.get("max_proposal_retries", DEFAULT_PROPOSAL_RETRIES))
            if s.attempt > retries:
                events.append(
                    RunEscalated(
                        f"no valid proposal after {s.attempt} attempts: {'; '.join(reasons)}",
                        list(lease.contract.escalation.reviewers),
                    )
                )
        self._append(lease, events, now)
        return True

    def _exceeded(
        self, lease: _Lease, now: datetime, limit: str, allowed: Any, used: Any, requested: Any
    ) -> None:
        self._append(
            lease,
            [
                BudgetExceeded(limit, float(allowed), float(used), float(requested)),
                RunEscalated(
                    f"budget {limit} exceeded ({used} used + {requested} requested > {allowed})",
                    list(lease.contract.escalation.reviewers),
                ),
            ],
            now,
        )

    def _act(self, lease: _Lease, slot: Slot, now: datetime) -> bool:
        s = lease.state
        contract = lease.contract
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
                self._append(lease, self._read_channels(lease, stale, now, "freshness"), now)
        if slot.status == "proposed":
            max_actions = contract.budget.get("max_actions")
            if max_actions is not None and len(s.executed) + 1 > int(max_actions):
                self._exceeded(lease, now, "max_actions", max_actions, len(s.executed), 1)
                return True
            history = self._history(lease)
            decision = decide_action(contract, s, slot.name, slot.args, now, history)
            step = s.next_step
            events: list[Event] = [
                ActionDecided(
                    step,
                    slot.index,
                    slot.name,
                    slot.args,
                    _decision_record(decision, history.calls),
                )
            ]
            # The autonomy level overlays the policy decision (which stays recorded as
            # policy made it, so replay is unaffected): `shadow` never executes, `assist`
            # sends everything policy would allow to a person.
            level = str(contract.autonomy.get("level", "autonomous"))
            execute = decision.effect == "allow" and level not in ("shadow", "assist")
            if decision.effect != "deny" and level == "shadow":
                events.append(ActionShadowed(step, slot.name, slot.args, decision.effect))
            elif execute:
                events.append(self._started(lease, step, slot.name, slot.args, 1, now))
            elif decision.effect != "deny":
                request = self._review_request(
                    lease, "action", decision, now, step=step, action=slot.name, args=slot.args
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
            self._append(lease, events, now, flush=execute)
            failpoint("after_decision")
            if execute:
                return self._execute(lease, step, slot.name, slot.args, 1, now)
            return True
        assert slot.step is not None
        if slot.status in ("approved", "edited"):
            return self._act_on_approval(lease, slot, now)
        if slot.status in ("decided", "started"):
            if slot.attempts >= spec.max_attempts:
                # every attempt so far timed out or never returned (the worker died in it):
                # give up rather than take down worker after worker
                self._append(
                    lease,
                    self._gave_up(lease, slot.step, slot.name, slot.attempts, slot.timeouts),
                    now,
                )
                return True
            attempt = slot.attempts + 1
            self._append(
                lease,
                [self._started(lease, slot.step, slot.name, slot.args, attempt, now)],
                now,
                flush=True,
            )
            return self._execute(lease, slot.step, slot.name, slot.args, attempt, now)
        raise CharterError(f"run {s.run_id}: action {slot.name} in unexpected state {slot.status}")

    def _act_on_approval(self, lease: _Lease, slot: Slot, now: datetime) -> bool:
        """Decide an approved action again, on current facts, just before it would run.

        An approval answers one decision, not the action forever: an edit is a new proposal
        that runs on the approval only if policy now allows it; an unedited action runs
        unless the decision now is stronger than the one the approval answered (a rate
        limit reached meanwhile, a channel that now shows the order refunded). A stronger
        decision wins and is recorded: a deny ends the action, a review or escalation opens
        a new review for the group it names.
        """
        assert slot.step is not None
        s = lease.state
        history = self._history(lease)
        decision = decide_action(lease.contract, s, slot.name, slot.args, now, history)
        record = _decision_record(decision, history.calls)
        events: list[Event] = [ActionDecided(slot.step, slot.index, slot.name, slot.args, record)]
        bound = "allow" if slot.status == "edited" else (slot.approved_effect or "review")
        if decision.effect == "deny":
            self._append(lease, events, now)
            return True
        if PRECEDENCE[decision.effect] > PRECEDENCE[bound]:
            why = (
                "edited arguments need their own review"
                if slot.status == "edited"
                else f"decided {decision.effect} on current facts, stronger than the "
                f"{bound} that was approved"
            )
            request = self._review_request(
                lease, "action", decision, now, step=slot.step, action=slot.name, args=slot.args
            )
            events.append(dataclasses.replace(request, reasons=[*request.reasons, why]))
            self._append(lease, events, now)
            return True
        self._check_approval(lease, slot)
        events.append(self._started(lease, slot.step, slot.name, slot.args, 1, now))
        self._append(lease, events, now, flush=True)
        return self._execute(lease, slot.step, slot.name, slot.args, 1, now)

    def _gave_up(
        self,
        lease: _Lease,
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
            events.extend(self._abort(lease, f"action {name} failed: {error}"))
        return events

    def _check_approval(self, lease: _Lease, slot: Slot) -> None:
        expected = action_digest(lease.run_id, slot.step, slot.name, slot.args)
        if slot.approved_digest != expected:
            raise CharterError(
                f"run {lease.run_id}: approval of step {slot.step} does not match the action about to run"
            )

    def _started(
        self,
        lease: _Lease,
        step: int,
        name: str,
        args: dict[str, Any],
        attempt: int,
        now: datetime,
        *,
        compensation: bool = False,
    ) -> ActionStarted:
        key = idempotency_key(lease.run_id, step, compensation)
        return ActionStarted(step, name, dict(args), key, attempt, format_time(now), compensation)

    def _execute(
        self,
        lease: _Lease,
        step: int,
        name: str,
        args: dict[str, Any],
        attempt: int,
        now: datetime,
        *,
        compensation: bool = False,
    ) -> bool:
        spec = lease.contract.actions[name]
        key = idempotency_key(lease.run_id, step, compensation)
        ctx = ExecutionContext(lease.run_id, step, name, key, attempt, compensation)
        started = time.perf_counter()
        executor = resolve_executor(spec.executor)
        timeout = spec.timeout.total_seconds()
        try:
            raw = self._runner.call(lambda: executor(dict(args), ctx), timeout)
        except ExecutorTimeoutError:
            # unknown whether the effect happened: the next attempt reuses the key
            at = self.clock()
            self._append(
                lease,
                [ActionTimedOut(step, name, attempt, timeout, format_time(at), compensation)],
                at,
                flush=True,
            )
            return True
        except ExecutorRaisedError as raised:
            failed_at = self.clock()
            error = _error_text(raised.error)
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
                events.extend(self._abort(lease, f"action {name} failed: {error}"))
            self._append(lease, events, failed_at)
            return True
        failpoint("after_executor")
        done = self.clock()
        # The executor returned, so its effect happened: the completion is recorded whatever
        # the result looks like. A result that is not JSON text is recorded as the closest
        # value that is, and the run does not go on as if it were well formed.
        result, changes = jsontext.sanitised(raw)
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
        self._append(lease, events, done)
        if changes and not compensation:
            reason = (
                f"action {name} failed: result of {name} is not JSON-serialisable "
                f"({'; '.join(changes)}); it is recorded as sanitised"
            )
            self._append(lease, self._abort(lease, reason), done)
        return True

    def _abort(self, lease: _Lease, reason: str) -> list[Event]:
        """Compensate earlier writes (newest first) if any declare how; otherwise fail the run."""
        steps = [
            a["step"]
            for a in reversed(lease.state.executed)
            if lease.contract.actions[a["name"]].compensate
        ]
        if steps:
            return [CompensationStarted(reason, steps)]
        return [RunFailed(reason)]

    def _compensate(self, lease: _Lease, now: datetime) -> bool:
        s = lease.state
        for step in s.compensation_steps:
            if step in s.compensated:
                continue
            original = next(a for a in s.executed if a["step"] == step)
            comp = lease.contract.actions[original["name"]].compensate
            assert comp is not None
            args = self._compensation_args(lease.contract, comp, original)
            tried = s.compensation_attempts.get(step, 0)
            if tried >= lease.contract.actions[comp].max_attempts:
                events = self._gave_up(
                    lease,
                    step,
                    comp,
                    tried,
                    s.compensation_timeouts.get(step, 0),
                    compensation=True,
                )
                self._append(lease, events, now)
                return True
            attempt = tried + 1
            self._append(
                lease,
                [self._started(lease, step, comp, args, attempt, now, compensation=True)],
                now,
                flush=True,
            )
            return self._execute(lease, step, comp, args, attempt, now, compensation=True)
        reason = s.compensation_reason or s.failed_action or "outcome not accepted"
        self._append(lease, [RunFailed(f"{reason}; compensated steps {s.compensation_steps}")], now)
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

    def _finish(self, lease: _Lease, now: datetime) -> bool:
        s = lease.state
        verdict = self._last_verdict(s, "outcome")
        if verdict is not None:
            req, decided = verdict
            if decided.verdict == "approve":
                return self._complete(lease, req.decision or {}, now)
            if decided.verdict == "expired" and decided.effect == "escalate":
                self._append(
                    lease, [RunEscalated("outcome review timed out", list(req.reviewers))], now
                )
                return True
            self._append(
                lease, self._abort(lease, f"outcome {decided.verdict} by {decided.by}"), now
            )
            return True
        history = self._history(lease)
        decision = decide_outcome(lease.contract, s, now, history)
        record = _decision_record(decision, history.calls)
        if decision.effect in ("allow", "batch"):
            return self._complete(lease, record, now)
        if decision.effect == "deny":
            events = self._abort(lease, "outcome denied: " + "; ".join(decision.reasons))
            if isinstance(events[0], RunFailed):
                events = [RunFailed(events[0].error, decision=record)]
            elif isinstance(events[0], CompensationStarted):
                events = [CompensationStarted(events[0].reason, events[0].steps, decision=record)]
            self._append(lease, events, now)
            return True
        self._append(
            lease, [self._review_request(lease, "outcome", decision, now, record=record)], now
        )
        return True

    def _complete(self, lease: _Lease, record: dict[str, Any], now: datetime) -> bool:
        s = lease.state
        success, value, _errors = evaluate_success(lease.contract, s)
        self._append(
            lease,
            [
                RunCompleted(
                    outcome_facts(s), record, success, value, round(s.cost_usd, 6), format_time(now)
                )
            ],
            now,
        )
        return True

    def _expire(self, lease: _Lease, now: datetime) -> None:
        req = lease.state.review
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
        self._append(lease, events, now)

    # -- people ----------------------------------------------------------------------
    def decide_review(
        self,
        review_id: str,
        verdict: str,
        *,
        by: str,
        comment: str = "",
        args: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a reviewer's verdict on a pending review, bound to the exact action it saw.

        Edited arguments are validated against the action's schema before anything is
        written; the run then re-decides them under policy (deny still wins).
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
        for text, what in ((by, "reviewer"), (comment, "comment")):
            problem = jsontext.text_problem(text, what)
            if problem:
                raise UsageError(problem)
        review = self.store.get_review(review_id)
        if review.status == "cancelled":
            raise UsageError(f"review {review.review_id} was cancelled: run {review.run_id} ended")
        if review.status != "pending":
            raise UsageError(
                f"review {review.review_id} was already decided ({review.verdict} by {review.decided_by})"
            )
        state = self.state(review.run_id)
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
            contract = self.contract_for(state.policy_hash)
            _recordable(dict(args), "edited args", UsageError)
            errors = list(contract.actions[req.action].validator.iter_errors(dict(args)))
            if errors:
                raise UsageError(
                    f"edited args for {req.action} are invalid: "
                    + "; ".join(e.message for e in errors)
                )
            edited = _recordable(dict(args), "edited args", UsageError)
            digest = action_digest(review.run_id, req.step, req.action, edited)
        event = ReviewDecided(
            req.review_id, verdict, by, format_time(self.clock()), digest, comment, edited
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

    def cancel(self, run_id: str, *, by: str, reason: str) -> None:
        for text, what in ((by, "by"), (reason, "reason")):
            problem = jsontext.text_problem(text, what)
            if problem:
                raise UsageError(problem)
        state = self.state(run_id)
        if state.is_terminal:
            raise UsageError(f"run {state.run_id} already ended ({state.status})")
        self.store.append(
            state.run_id,
            [RunCancelled(by, reason)],
            expected_seq=state.seq,
            at=format_time(self.clock()),
            status="cancelled",
            wake_at=None,
        )


def _heartbeat(ref: weakref.ReferenceType[Runtime]) -> None:
    """Body of a runtime's heartbeat thread; ends when the runtime is stopped or collected."""
    while True:
        runtime = ref()
        if runtime is None:
            return
        if runtime._stop.is_set() and runtime._current is None:
            return
        period = max(runtime.lease.total_seconds() / 12, 0.01)
        runtime._beat()
        del runtime
        time.sleep(min(period, 2.5))
